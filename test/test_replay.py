"""Offline bag replay: tiny bags in every input format, written into tmp_path with rosbags.

Every test runs the real Derainer (model_path=None, the bundled tiny model) on 32x32 frames so
the whole file stays fast; two frames per image topic, all image topics the same size so they
are stepped as one batch. Each input format is replayed once (module fixture `replayed`) and
several tests inspect that result.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_typestore

from rainmamba_core.streaming.derainer import Derainer
from rainmamba_ros.bagio import BagIOError, OutputBag, derained_topic
from rainmamba_ros.bench.replay import bench_replay
from rainmamba_ros.conversions import image_to_rgb, rgb_to_compressed, rgb_to_image_fields
from rainmamba_ros.replay import ReplayError, main, replay_bag
from rainmamba_ros.replay import api as replay_api

H, W = 32, 32          # smallest size the tiny model's downsampling accepts comfortably
N_FRAMES = 2           # per image topic (enough for order and a stamp going back)
T0 = 1_700_000_000 * 10**9
FRAME_DT = 100_000_000  # 10 Hz

IMAGE_TOPICS = ('/front/image_raw', '/rear/image_mono', '/side/image_raw/compressed')
OTHER_TOPICS = ('/imu', '/chatter')
_FOREVER = QosTime(2147483647, 4294967295)
SENSOR_QOS = Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
                 _FOREVER, _FOREVER, QosLiveliness.AUTOMATIC, _FOREVER,
                 avoid_ros_namespace_conventions=False)


# --------------------------------------------------------------------------- bag builders
def _frame(i: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(100 * k + i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _messages(store: Any, ros1: bool, rewind: bool = False) -> list[tuple[str, str, int, Any]]:
    """(topic, msgtype, receive time, message) in receive-time order, for either typestore.

    rewind: the last /front/image_raw frame's header stamp jumps 1 s back (receive times stay
    in order), as after a camera driver restart: the Derainer must reset that stream once.
    """
    T = store.types
    extra = {'seq': 0} if ros1 else {}

    def header(t: int, frame_id: str, back: bool = False) -> Any:
        stamp = t - 5_000_000  # header stamp earlier than receive time, as from a driver
        if back:
            stamp = T0 - 10**9
        return T['std_msgs/msg/Header'](
            stamp=T['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9),
            frame_id=frame_id, **extra)

    out = []
    for i in range(N_FRAMES):
        t = T0 + i * FRAME_DT
        data, step = rgb_to_image_fields(_frame(i, 0), 'rgb8')
        out.append(('/front/image_raw', 'sensor_msgs/msg/Image', t, T['sensor_msgs/msg/Image'](
            header=header(t, 'front_cam', rewind and i == N_FRAMES - 1), height=H, width=W,
            encoding='rgb8', is_bigendian=0,
            step=step, data=data)))
        out.append(('/imu', 'sensor_msgs/msg/Imu', t + 1_000_000, T['sensor_msgs/msg/Imu'](
            header=header(t + 1_000_000, 'imu_link'),
            orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=float(i), w=1.0),
            orientation_covariance=np.arange(9, dtype=np.float64),
            angular_velocity=T['geometry_msgs/msg/Vector3'](x=0.1 * i, y=0.0, z=0.0),
            angular_velocity_covariance=np.zeros(9),
            linear_acceleration=T['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=9.81),
            linear_acceleration_covariance=np.zeros(9))))
        data, step = rgb_to_image_fields(_frame(i, 1), 'mono8')
        out.append(('/rear/image_mono', 'sensor_msgs/msg/Image', t + 2_000_000,
                    T['sensor_msgs/msg/Image'](header=header(t + 2_000_000, 'rear_cam'),
                                               height=H, width=W, encoding='mono8',
                                               is_bigendian=0, step=step, data=data)))
        ok, jpg = cv2.imencode('.jpg', _frame(i, 2))
        assert ok
        out.append(('/side/image_raw/compressed', 'sensor_msgs/msg/CompressedImage',
                    t + 3_000_000, T['sensor_msgs/msg/CompressedImage'](
                        header=header(t + 3_000_000, 'front_cam'), format='jpeg',
                        data=jpg.reshape(-1))))
        out.append(('/chatter', 'std_msgs/msg/String', t + 4_000_000,
                    T['std_msgs/msg/String'](data=f'hello {i}')))
    return out


def write_ros2_bag(path: Path, storage: str) -> Path:
    store = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer2(path, version=9, storage_plugin=plugin) as writer:
        conns: dict[str, Any] = {}
        for topic, msgtype, t, msg in _messages(store, ros1=False):
            if topic not in conns:
                qos = [SENSOR_QOS] if topic == '/front/image_raw' else []
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store,
                                                     offered_qos_profiles=qos)
            writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
    return path


def write_ros1_bag(path: Path) -> Path:
    store = get_typestore(Stores.ROS1_NOETIC)
    with Writer1(path) as writer:
        conns: dict[str, Any] = {}
        for topic, msgtype, t, msg in _messages(store, ros1=True, rewind=True):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store,
                                                     latching=1 if topic == '/chatter' else 0)
            writer.write(conns[topic], t, store.serialize_ros1(msg, msgtype))
    return path


def write_split_bag(path: Path) -> Path:
    """A ROS 2 sqlite3 bag split over two files (as `ros2 bag record --max-bag-size` makes),
    each message zstd-compressed (`--compression-mode message`)."""
    import yaml

    store = get_typestore(Stores.ROS2_HUMBLE)
    msgs = _messages(store, ros1=False)
    half = len(msgs) // 2
    parts = []
    for k, chunk in enumerate((msgs[:half], msgs[half:])):
        part = path.parent / f'part{k}'
        writer = Writer2(part, version=9, storage_plugin=StoragePlugin.SQLITE3)
        writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
        with writer:
            conns = {}
            for topic, msgtype, _, _ in msgs:  # every topic in both files, like rosbag2
                if topic not in conns:
                    qos = [SENSOR_QOS] if topic == '/front/image_raw' else []
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=store,
                                                         offered_qos_profiles=qos)
            for topic, msgtype, t, msg in chunk:
                writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
        parts.append(yaml.safe_load((part / 'metadata.yaml').read_text())
                     ['rosbag2_bagfile_information'])
        path.mkdir(exist_ok=True)
        next(part.glob('*.db3')).rename(path / f'{path.name}_{k}.db3')
    meta = parts[0]
    assert meta['compression_mode'] == 'message'
    meta['relative_file_paths'] = [f'{path.name}_{k}.db3' for k in range(2)]
    meta['files'] = [dict(p['files'][0], path=f'{path.name}_{k}.db3') for k, p in
                     enumerate(parts)]
    meta['message_count'] = len(msgs)
    meta['duration'] = {'nanoseconds': msgs[-1][2] - msgs[0][2]}
    counts = {p['topic_metadata']['name']: 0 for p in meta['topics_with_message_count']}
    for topic, _, _, _ in msgs:
        counts[topic] += 1
    for entry in meta['topics_with_message_count']:
        entry['message_count'] = counts[entry['topic_metadata']['name']]
    (path / 'metadata.yaml').write_text(yaml.safe_dump({'rosbag2_bagfile_information': meta}))
    return path


def make_bag(root: Path, kind: str) -> Path:
    if kind == 'ros1':
        return write_ros1_bag(root / 'input.bag')
    return write_ros2_bag(root / 'input', kind)


def tree_hash(path: Path) -> str:
    """SHA-256 over every file's name and bytes under `path` (or of the file itself)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob('*') if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def read_bag(path: Path) -> dict[str, list[tuple[int, bytes, Any]]]:
    """topic -> [(receive time, raw bytes, decoded msg)] plus '__conns__' -> connections."""
    out: dict[str, Any] = {}
    with AnyReader([path]) as reader:
        for conn, t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((t, bytes(raw), msg))
        out['__conns__'] = {c.topic: c for c in reader.connections}
    return out


class RecordingDerainer(Derainer):
    """The real Derainer, remembering what it returned (stream, stamp) -> RGB output."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_path=None, **kwargs)
        self.returned: dict[tuple[str, int], np.ndarray] = {}
        self.calls = 0

    def process_batch(self, items: list[tuple[str, np.ndarray, int | None]]) -> list[np.ndarray]:
        self.calls += 1
        outs = super().process_batch(items)
        for (sid, _, stamp), out in zip(items, outs):
            self.returned[(sid, int(stamp or 0))] = out.copy()
        return outs


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


# --------------------------------------------------------------------------- one replay per format
@pytest.fixture(scope='module', params=['sqlite3', 'mcap', 'ros1'])
def replayed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    kind = request.param
    root = tmp_path_factory.mktemp(f'replay_{kind}')
    src = make_bag(root, kind)
    before = tree_hash(src)
    derainer = RecordingDerainer()
    storage = 'sqlite3' if kind == 'mcap' else 'mcap'  # cross formats: mcap in -> sqlite3 out
    video = root / 'video.mp4'
    summary = replay_bag(src, root / 'output', IMAGE_TOPICS, storage=storage, derainer=derainer,
                         progress=False, export_video=video if kind == 'mcap' else None)
    return {'kind': kind, 'src': src, 'out': root / 'output', 'root': root, 'hash': before,
            'derainer': derainer, 'summary': summary, 'video': video}


def test_input_unchanged_and_no_leftovers(replayed: dict) -> None:
    assert tree_hash(replayed['src']) == replayed['hash']
    assert (replayed['out'] / 'metadata.yaml').is_file()
    assert not [p for p in replayed['root'].iterdir() if '.partial' in p.name]


def test_copied_topics_are_byte_identical(replayed: dict) -> None:
    src, out = read_bag(replayed['src']), read_bag(replayed['out'])
    ros1 = replayed['kind'] == 'ros1'
    # Without --replace every input topic, images included, is copied unchanged.
    for topic in OTHER_TOPICS + IMAGE_TOPICS:
        a, b = src[topic], out[topic]
        assert [t for t, _, _ in a] == [t for t, _, _ in b], topic
        if ros1:
            # ROS 1 bytes are converted to CDR once; compare through the ROS 2 typestore.
            store = get_typestore(Stores.ROS2_HUMBLE)
            for (_, _, m1), (_, raw2, _) in zip(a, b):
                m2 = store.deserialize_cdr(raw2, src['__conns__'][topic].msgtype)
                if topic == '/chatter':
                    assert m2.data == m1.data
                else:
                    assert _stamp(m2) == _stamp(m1) and m2.header.frame_id == m1.header.frame_id
                if topic == '/imu':
                    assert m2.orientation.z == m1.orientation.z
                    assert np.array_equal(m2.orientation_covariance, m1.orientation_covariance)
        else:
            assert [r for _, r, _ in a] == [r for _, r, _ in b], topic


def test_qos_and_types_preserved(replayed: dict) -> None:
    src, out = read_bag(replayed['src']), read_bag(replayed['out'])
    sc, oc = src['__conns__'], out['__conns__']
    for topic in OTHER_TOPICS + IMAGE_TOPICS:
        assert oc[topic].msgtype == sc[topic].msgtype
    for topic in IMAGE_TOPICS:
        derived = derained_topic(topic, topic.endswith('/compressed'))
        assert oc[derived].msgtype == 'sensor_msgs/msg/Image'
    if replayed['kind'] == 'ros1':
        # A latched ROS 1 topic becomes transient-local; others get default QoS.
        assert [q.durability for q in oc['/chatter'].ext.offered_qos_profiles] == \
            [QosDurability.TRANSIENT_LOCAL]
        assert oc['/imu'].ext.offered_qos_profiles == []
    else:
        for topic in OTHER_TOPICS + IMAGE_TOPICS:
            assert oc[topic].ext.offered_qos_profiles == sc[topic].ext.offered_qos_profiles
        assert oc['/front/derained/image'].ext.offered_qos_profiles == [SENSOR_QOS]


def test_derained_topics_match_input_frames(replayed: dict) -> None:
    src, out = read_bag(replayed['src']), read_bag(replayed['out'])
    returned = replayed['derainer'].returned
    for topic in IMAGE_TOPICS:
        compressed = topic.endswith('/compressed')
        a, b = src[topic], out[derained_topic(topic, compressed)]
        assert len(b) == len(a) == N_FRAMES
        for (t1, _, m1), (t2, _, m2) in zip(a, b):
            assert t2 == t1  # same receive time
            assert _stamp(m2) == _stamp(m1)
            assert m2.header.frame_id == m1.header.frame_id
            expected = returned[(topic, _stamp(m1))]
            # Compressed input becomes a raw Image like the live node's; bare 'jpeg' is bgr8.
            encoding = 'bgr8' if compressed else m1.encoding
            assert (m2.encoding, m2.height, m2.width) == (encoding, H, W)
            data, step = rgb_to_image_fields(expected, encoding)
            assert m2.step == step
            # Exactly what the Derainer returned, written with the same conversions: this pins
            # the plumbing, not the pixels (the stand-in test at the end of this file does).
            assert bytes(m2.data) == data.tobytes()
    summary = replayed['summary']
    assert summary.frames == dict.fromkeys(IMAGE_TOPICS, N_FRAMES)
    # Only the ROS 1 bag has a header stamp going backwards; receive times never do, so this
    # also shows the Derainer gets header stamps.
    expected_resets = {'time_backwards': 1} if replayed['kind'] == 'ros1' else {}
    assert {k: v for k, v in summary.resets.items() if v} == expected_resets
    # All three topics have equal frame sizes and interleave: one batch per time step.
    assert replayed['derainer'].calls == N_FRAMES


def test_output_topic_already_in_input_is_refused(replayed: dict, tmp_path: Path) -> None:
    # Replaying an already derained bag again would write a second /front/derained/image.
    with pytest.raises(ReplayError, match='/front/derained/image.*already exists.*--replace'):
        replay_bag(replayed['out'], tmp_path / 'again', ['/front/image_raw'], progress=False)
    assert not (tmp_path / 'again').exists()


@pytest.mark.parametrize('replayed', ['mcap'], indirect=True)  # video only in the mcap run
def test_video_export(replayed: dict) -> None:
    paths = replayed['summary'].videos
    assert len(paths) == len(IMAGE_TOPICS)
    cap = cv2.VideoCapture(paths[0])
    assert cap.isOpened()
    n, width = 0, 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, width = n + 1, img.shape[1]
    cap.release()
    assert n == N_FRAMES and width == 2 * W  # side by side


# --------------------------------------------------------------------------- behaviours
@pytest.fixture(scope='module')
def mcap_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ros2_bag(tmp_path_factory.mktemp('src') / 'input', 'mcap')


def test_replace_writes_derained_under_original_names(mcap_bag: Path, tmp_path: Path) -> None:
    out = tmp_path / 'replaced'
    out.mkdir()  # an existing output: replaced only because of overwrite
    (out / 'stale.txt').write_text('old')
    derainer = RecordingDerainer()
    chosen = ['/front/image_raw', '/side/image_raw/compressed']
    replay_bag(mcap_bag, out, chosen, replace=True, overwrite=True, derainer=derainer,
               progress=False)
    src, res = read_bag(mcap_bag), read_bag(out)
    assert not (out / 'stale.txt').exists()
    assert set(res) == set(src)  # no new topics
    for topic in OTHER_TOPICS + ('/rear/image_mono',):
        assert [r for _, r, _ in res[topic]] == [r for _, r, _ in src[topic]]
    assert res['__conns__']['/front/image_raw'].ext.offered_qos_profiles == [SENSOR_QOS]
    for topic in chosen:
        assert res['__conns__'][topic].msgtype == src['__conns__'][topic].msgtype
        assert len(res[topic]) == N_FRAMES
        for (t1, _, m1), (t2, _, m2) in zip(src[topic], res[topic]):
            assert t1 == t2 and _stamp(m1) == _stamp(m2)
            assert m2.header.frame_id == m1.header.frame_id
            expected = derainer.returned[(topic, _stamp(m1))]
            if topic.endswith('/compressed'):
                # Re-compressed in the input's format; the same encoder on the same pixels
                # gives the same bytes.
                assert m2.format == m1.format
                assert bytes(m2.data) == rgb_to_compressed(expected, m1.format, 95)
            else:
                assert m2.encoding == m1.encoding
                assert np.array_equal(image_to_rgb(m2), expected)


def test_cli_verb_and_existing_output_refused(mcap_bag: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from rainmamba_ros.cli import main as rainmamba_main

    out = tmp_path / 'exists'
    out.mkdir()
    code = rainmamba_main(['replay', str(mcap_bag), str(out), '--topic', '/front/image_raw',
                           '--no-progress'])
    assert code == 2
    err = capsys.readouterr().err
    assert str(out) in err and '--overwrite' in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize('damage', ['garbage_bag', 'truncated_mcap', 'bad_metadata', 'missing'])
def test_corrupt_or_missing_bag_is_a_clear_error(mcap_bag: Path, tmp_path: Path, damage: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if damage == 'garbage_bag':
        bad = tmp_path / 'broken.bag'
        bad.write_bytes(b'#ROSBAG V2.0\n' + bytes(range(256)) * 8)
    elif damage == 'truncated_mcap':
        data = next(mcap_bag.glob('*.mcap')).read_bytes()
        bad = tmp_path / 'cut.mcap'
        bad.write_bytes(data[:len(data) // 2])
    elif damage == 'bad_metadata':
        bad = tmp_path / 'bagdir'
        bad.mkdir()
        (bad / 'metadata.yaml').write_text('rosbag2_bagfile_information: [not: a, bag')
    else:
        bad = tmp_path / 'nowhere'
    code = main([str(bad), str(tmp_path / 'out'), '--topic', '/front/image_raw', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err and 'expected' in err
    assert not (tmp_path / 'out').exists()
    assert not [p for p in tmp_path.iterdir() if '.partial' in p.name]


def test_missing_or_wrong_topic_lists_image_topics(mcap_bag: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for topic in ('/nope/image_raw', '/imu'):
        code = main([str(mcap_bag), str(tmp_path / 'out'), '--topic', topic, '--no-progress'])
        err = capsys.readouterr().err
        assert code == 2
        assert topic in err and str(mcap_bag) in err
        assert all(t in err for t in IMAGE_TOPICS)  # the available image topics are listed
    assert not (tmp_path / 'out').exists()


def test_interrupt_leaves_no_output(mcap_bag: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree_hash(mcap_bag)
    calls = {'n': 0}
    real = Derainer.process_batch

    def interrupted(self: Derainer, items: list) -> list:
        calls['n'] += 1
        if calls['n'] > 1:  # one batch gets through, so the writer has already written
            raise KeyboardInterrupt
        return real(self, items)

    monkeypatch.setattr(Derainer, 'process_batch', interrupted)
    monkeypatch.setattr(replay_api, 'make_derainer', lambda kw: Derainer(model_path=None))
    out = tmp_path / 'out'
    code = main([str(mcap_bag), str(out), '--topic', '/front/image_raw',
                 '--topic', '/rear/image_mono', '--no-progress',
                 '--export-video', str(tmp_path / 'vid')])
    assert code == 130
    assert calls['n'] == 2
    assert not out.exists()
    assert not [p for p in tmp_path.rglob('*') if '.partial' in p.name or p.suffix == '.mp4']
    assert tree_hash(mcap_bag) == before


def test_split_compressed_bag_input(tmp_path: Path) -> None:
    src = write_split_bag(tmp_path / 'split')
    assert len(list(src.glob('*.db3'))) == 2
    before = tree_hash(src)
    summary = replay_bag(src, tmp_path / 'out', ['/front/image_raw'], storage='sqlite3',
                         progress=False)
    a, b = read_bag(src), read_bag(tmp_path / 'out')
    for topic in OTHER_TOPICS + IMAGE_TOPICS:
        assert [(t, r) for t, r, _ in a[topic]] == [(t, r) for t, r, _ in b[topic]], topic
    assert [_stamp(m) for _, _, m in b['/front/derained/image']] == \
        [_stamp(m) for _, _, m in a['/front/image_raw']]
    assert summary.frames == {'/front/image_raw': N_FRAMES}
    # The bag spans N_FRAMES-1 intervals plus the last topic's 4 ms offset in _messages.
    assert summary.bag_duration_s == pytest.approx(((N_FRAMES - 1) * FRAME_DT + 4e6) / 1e9)
    assert tree_hash(src) == before


@pytest.mark.slow  # a fresh interpreter loads torch and the model (10-20 s on 2 busy cores)
def test_sigterm_in_subprocess_leaves_no_output(tmp_path: Path) -> None:
    """The real signal path: SIGTERM -> KeyboardInterrupt -> cleanup, exit code 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = write_ros2_bag(tmp_path / 'input', 'mcap')
    before = tree_hash(src)
    out = tmp_path / 'out'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'rainmamba_ros.replay', str(src), str(out), '--no-progress',
         '-t', '/front/image_raw', '-t', '/rear/image_mono', '-t', '/side/image_raw/compressed'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    # The staging directory appears once the model is loaded, just before the first frame.
    deadline = time.monotonic() + 120
    while not any('.partial' in p.name for p in tmp_path.iterdir()):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip('replay finished before the signal arrived (model faster than the poll)')
    assert proc.returncode == 130, err
    assert 'interrupted' in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if '.partial' in p.name]
    assert tree_hash(src) == before


def test_output_bag_abort_and_commit(tmp_path: Path) -> None:
    out = OutputBag(tmp_path / 'bag', storage='sqlite3')
    tmp_root = out.tmp_root
    assert tmp_root.name.startswith('.bag.partial-') and tmp_root.parent == tmp_path
    out.abort()
    assert not tmp_root.exists() and not (tmp_path / 'bag').exists()
    with pytest.raises(BagIOError, match='unknown output format'):
        OutputBag(tmp_path / 'bag', storage='rosbag1')


def test_replay_error_without_topics_lists_them(mcap_bag: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match='/rear/image_mono'):
        replay_bag(mcap_bag, tmp_path / 'o', [], progress=False)


def test_derained_topic_names() -> None:
    assert derained_topic('/front/image_raw', False) == '/front/derained/image'
    assert derained_topic('front/image_raw', False) == '/front/derained/image'
    assert derained_topic('/image_raw', False) == '/derained/image'
    assert derained_topic('/a/b/image_raw/compressed', True) == '/a/b/derained/image'


@pytest.mark.bench
def test_bench_replay_writes_table_and_json(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import json

    result = bench_replay(width=W, height=H, frames=3, json_path=tmp_path / 'r.json', progress=False)
    saved = json.loads((tmp_path / 'r.json').read_text())
    assert saved['rows'] == result['rows']
    assert {r['stage'] for r in saved['rows']} >= {'inference', 'replay (pipelined)'}
    assert 'frames/s' in capsys.readouterr().out


# --------------------------------------------------------------------------- pixels, end to end
def test_replay_pixels_are_the_known_transform_of_each_topics_input(tmp_path: Path) -> None:
    """Bytes written by hand, a stand-in model with a known output, bytes read back by hand.

    The tests above compare the output with what the Derainer returned, re-encoded with the same
    conversions, so a channel swap before the model (or on both sides of bgr8) passes them. Here
    each topic has its own pictures and encoding; every output pixel must be colour_rotate of
    that topic's own input frame (cross-wired topics, an R/B swap or a crop all show).
    """
    from pixel_standin import ColourRotateBackend, colour_rotate, decode_by_hand, encode_by_hand, scene

    h, w, n = 24, 40, 3
    store = get_typestore(Stores.ROS2_HUMBLE)
    T = store.types
    raw_topics = {'/front/image_raw': 'bgr8', '/rear/image_raw': 'rgb8', '/top/image_raw': 'bgra8'}
    png_topic = '/side/image_raw/compressed'
    sent: dict[tuple[str, int], np.ndarray] = {}
    src = tmp_path / 'pixels'
    with Writer2(src, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, 'sensor_msgs/msg/Image', typestore=store)
                 for t in raw_topics}
        conns[png_topic] = writer.add_connection(png_topic, 'sensor_msgs/msg/CompressedImage',
                                                 typestore=store)
        for i in range(n):
            t = T0 + i * FRAME_DT
            header = T['std_msgs/msg/Header'](
                stamp=T['builtin_interfaces/msg/Time'](sec=t // 10**9, nanosec=t % 10**9),
                frame_id='cam')
            for k, (topic, enc) in enumerate(raw_topics.items()):
                rgb = np.roll(scene(10 * k + i, h, w), 9 * k, axis=1)  # each topic its own picture
                sent[(topic, t)] = rgb
                data, step = encode_by_hand(rgb, enc)
                msg = T['sensor_msgs/msg/Image'](header=header, height=h, width=w, encoding=enc,
                                                 is_bigendian=0, step=step,
                                                 data=np.frombuffer(data, np.uint8))
                writer.write(conns[topic], t, store.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
            rgb = scene(100 + i, h, w)[::-1]
            sent[(png_topic, t)] = rgb
            ok, png = cv2.imencode('.png', rgb[..., ::-1])  # OpenCV writes BGR arrays: lossless
            assert ok
            msg = T['sensor_msgs/msg/CompressedImage'](header=header,
                                                       format='bgr8; png compressed bgr8',
                                                       data=png.reshape(-1))
            writer.write(conns[png_topic], t,
                         store.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage'))

    backend = ColourRotateBackend()
    topics = list(raw_topics) + [png_topic]
    summary = replay_bag(src, tmp_path / 'out', topics, derainer=Derainer(backend=backend),
                         progress=False)
    assert summary.frames == dict.fromkeys(topics, n)
    assert backend.batches == [len(topics)] * n  # equal sizes: every time step one batch
    out = read_bag(tmp_path / 'out')
    for topic in topics:
        compressed = topic == png_topic
        frames = out[derained_topic(topic, compressed)]
        assert len(frames) == n, topic
        encoding = 'bgr8' if compressed else raw_topics[topic]  # the source encoding of the png
        for t, _, m in frames:
            assert (m.encoding, m.height, m.width) == (encoding, h, w), topic
            got = decode_by_hand(m.data, m.height, m.width, m.step, encoding)
            np.testing.assert_array_equal(got, colour_rotate(sent[(topic, t)]),
                                          err_msg=f'{topic} at {t}')
            if encoding.endswith('a8'):  # alpha passes through: opaque in, opaque out
                alpha = np.frombuffer(bytes(m.data), np.uint8).reshape(h, m.step)[:, 3::4]
                assert (alpha == 255).all()
