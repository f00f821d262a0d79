"""Reading ROS 1/ROS 2 bags and writing ROS 2 bags for offline replay, on `rosbags` only.

No rclpy and no ROS install: this runs on a laptop or a cluster node. Two halves:

- `InputBag` opens a ROS 2 bag (a directory with metadata.yaml, sqlite3 or MCAP, split and/or
  zstd-compressed; or a bare .db3/.mcap file) or a ROS 1 .bag through `rosbags.highlevel.AnyReader`
  and yields every message in receive-time order as ROS 2 CDR bytes. For ROS 2 input those are
  the stored bytes unchanged. For ROS 1 input they are converted with `Typestore.ros1_to_cdr`
  (a byte-level rewrite that drops `Header.seq`): the only re-serialisation this module does to
  messages it copies.
- `OutputBag` writes a new ROS 2 bag into a hidden temporary directory beside the output
  (`.NAME.partial-XXXX/NAME`) and renames it into place only in `commit()`. `abort()` removes the
  temporary directory, so an interrupted or failed run leaves nothing that looks like a bag at
  OUTPUT. A hard kill (SIGKILL, power loss) can leave the hidden `.partial-` directory behind; it
  has no metadata.yaml and is never at OUTPUT.

The input is only ever opened for reading (sqlite3 with `immutable=1`, other files read-only).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag1,
    ConnectionExtRosbag2,
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from rainmamba_core.errors import RainMambaError

__all__ = [
    'BagIOError', 'IMAGE_TYPE', 'COMPRESSED_TYPE', 'IMAGE_TYPES', 'STORAGE_FORMATS',
    'InputBag', 'OutputBag', 'TopicSummary', 'derained_topic', 'normalise_topic',
]

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGE_FORMATS = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}

# Bags recorded before ROS 2 Iron store no message definitions; their types are the Humble ones.
_DEFAULT_STORE = Stores.ROS2_HUMBLE

_INPUT_EXPECTED = ('expected a ROS 2 bag directory (metadata.yaml + .db3/.mcap files), a bare '
                   '.db3 or .mcap file, or a ROS 1 .bag file')

# A latched ROS 1 topic becomes a transient-local publisher in ROS 2 (what rosbag2 itself records
# for latched topics), so late subscribers of `ros2 bag play` still get the message.
_FOREVER = QosTime(2147483647, 4294967295)
_LATCHED_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE,
                   QosDurability.TRANSIENT_LOCAL, _FOREVER, _FOREVER, QosLiveliness.AUTOMATIC,
                   _FOREVER, avoid_ros_namespace_conventions=False)


class BagIOError(RainMambaError, Exception):
    """A bag could not be read or written; the message names the path and what was expected."""


def normalise_topic(topic: str) -> str:
    """'front/image_raw' -> '/front/image_raw' (bags store absolute names)."""
    topic = topic.strip()
    return topic if topic.startswith('/') else '/' + topic


def derained_topic(topic: str, compressed: bool = False) -> str:
    """Name of the derained output topic for an input image topic: `<namespace>/derained/image`.

    The namespace is the input topic's parent, after removing image_transport's `/compressed`
    suffix from a CompressedImage topic. This is the name the live node publishes under, and
    (like the node) the output is a raw sensor_msgs/Image for either input type.

    Examples: '/front/image_raw' -> '/front/derained/image';
    '/front/image_raw/compressed' (compressed=True) -> '/front/derained/image';
    '/image_raw' -> '/derained/image'.
    """
    base = normalise_topic(topic)
    if compressed and base.endswith('/compressed'):
        base = base[:-len('/compressed')]
    namespace = base.rsplit('/', 1)[0]
    return f'{namespace}/derained/image'


@dataclass(frozen=True)
class TopicSummary:
    """One topic of an input bag."""

    topic: str
    msgtype: str
    count: int


class InputBag:
    """A bag opened for reading; yields ROS 2 CDR for every message.

    Use as a context manager. `path` may be a ROS 2 bag directory, a .db3/.mcap file or a ROS 1
    .bag file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagIOError(f'input bag {self.path} does not exist: {_INPUT_EXPECTED}')
        if self.path.is_file() and self.path.suffix not in ('.bag', '.db3', '.mcap'):
            raise BagIOError(f'input {self.path} has suffix {self.path.suffix!r}: '
                             f'{_INPUT_EXPECTED}')
        self._reader: AnyReader | None = None
        self.is_ros1 = self.path.suffix == '.bag'
        # Typestore used to serialise new messages (and to describe copied connections whose
        # bag has no definitions); set in open().
        self.out_typestore: Any = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> InputBag:
        try:
            reader = AnyReader([self.path], default_typestore=get_typestore(_DEFAULT_STORE))
            reader.open()
        except Exception as exc:  # rosbags raises many types for damaged files
            raise BagIOError(f'cannot read bag {self.path}: {type(exc).__name__}: {exc}; '
                             f'{_INPUT_EXPECTED} that is complete and not corrupt') from exc
        self._reader = reader
        # The bag's own definitions win; types it does not describe (e.g. sensor_msgs/Image in
        # a bag of CompressedImage only) come from the default ROS 2 store.
        defaults = get_typestore(_DEFAULT_STORE).fielddefs
        types = {**defaults, **reader.typestore.fielddefs}
        if self.is_ros1:
            # ROS 1 Header has `seq`; ROS 2 does not. Serialise with the bag's own definitions
            # but the ROS 2 Header, which is also what ros1_to_cdr writes.
            types['std_msgs/msg/Header'] = defaults['std_msgs/msg/Header']
        store = get_typestore(Stores.EMPTY)
        store.register(types)
        self.out_typestore = store
        return self

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> InputBag:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reader(self) -> AnyReader:
        if self._reader is None:
            raise BagIOError(f'bag {self.path} is not open: use `with InputBag(path) as bag:`')
        return self._reader

    # ------------------------------------------------------------------ metadata
    @property
    def connections(self) -> list[Connection]:
        return list(self.reader.connections)

    def topics(self) -> list[TopicSummary]:
        """Every topic with its type and message count, sorted by name."""
        return [TopicSummary(name, info.msgtype or '(mixed types)', int(info.msgcount))
                for name, info in sorted(self.reader.topics.items())]

    def image_topics(self) -> list[TopicSummary]:
        return [t for t in self.topics() if t.msgtype in IMAGE_TYPES]

    def describe_image_topics(self) -> str:
        """Human-readable list of image topics, for error messages."""
        images = self.image_topics()
        if not images:
            return 'this bag has no sensor_msgs/msg/Image or CompressedImage topics'
        return 'image topics in this bag: ' + ', '.join(
            f'{t.topic} ({t.msgtype.rsplit("/", 1)[-1]}, {t.count} msgs)' for t in images)

    @property
    def start_ns(self) -> int:
        return int(self.reader.start_time)

    @property
    def duration_ns(self) -> int:
        """Receive-time span of the bag (0 for an empty or one-message bag)."""
        if self.reader.message_count == 0:
            return 0
        # rosbags' end_time is one past the last message.
        return max(0, int(self.reader.end_time) - 1 - int(self.reader.start_time))

    # ------------------------------------------------------------------ messages
    def messages(self) -> Iterator[tuple[Connection, int, bytes | memoryview]]:
        """Every message in receive-time order as (connection, receive time ns, ROS 2 CDR)."""
        reader = self.reader
        try:
            for conn, t_ns, raw in reader.messages():
                yield conn, t_ns, (self.to_cdr(raw, conn.msgtype) if self.is_ros1 else raw)
        except BagIOError:
            raise
        except Exception as exc:
            raise BagIOError(f'cannot read messages from bag {self.path}: {type(exc).__name__}: '
                             f'{exc}; the bag is truncated or corrupt') from exc

    def to_cdr(self, raw: bytes | memoryview, msgtype: str) -> memoryview:
        """ROS 1 serialised bytes -> ROS 2 CDR (little endian) of the same message."""
        try:
            return self.out_typestore.ros1_to_cdr(raw, msgtype)
        except Exception as exc:
            raise BagIOError(f'cannot convert a ROS 1 {msgtype} message of {self.path} to '
                             f'ROS 2 CDR: {exc}') from exc

    def deserialize(self, cdr: bytes | memoryview, msgtype: str) -> Any:
        """ROS 2 CDR -> rosbags message dataclass (ROS 1 input: converted by messages())."""
        try:
            return self.out_typestore.deserialize_cdr(cdr, msgtype)
        except Exception as exc:
            raise BagIOError(f'cannot decode a {msgtype} message of {self.path}: {exc}') from exc

    def type_spec(self, msgtype: str, like: Connection) -> dict[str, Any]:
        """Spec for a new connection of `msgtype` with the QoS of connection `like`."""
        spec = self.connection_spec(like)
        spec.update(msgtype=msgtype,
                    msgdef=self.out_typestore.generate_msgdef(msgtype, ros_version=2)[0],
                    rihs01=self.out_typestore.hash_rihs01(msgtype))
        return spec

    def connection_spec(self, conn: Connection) -> dict[str, Any]:
        """Keyword arguments that re-create `conn` in an `OutputBag` (definition, hash, QoS)."""
        msgdef, digest = '', ''
        if not self.is_ros1 and conn.msgdef.format != MessageDefinitionFormat.NONE:
            msgdef = conn.msgdef.data
            digest = conn.digest
        try:
            if not msgdef:
                msgdef = self.out_typestore.generate_msgdef(conn.msgtype, ros_version=2)[0]
            if not digest or not digest.startswith('RIHS01_'):
                digest = self.out_typestore.hash_rihs01(conn.msgtype)
        except Exception as exc:
            raise BagIOError(
                f'bag {self.path} stores no definition of {conn.msgtype} (topic {conn.topic}) '
                f'and the {_DEFAULT_STORE.value} typestore does not know it either, so it cannot '
                f'be copied: {exc}; re-record with ROS 2 Iron or newer (which stores '
                f'definitions)') from exc
        if isinstance(conn.ext, ConnectionExtRosbag2):
            fmt, qos = conn.ext.serialization_format, list(conn.ext.offered_qos_profiles)
        else:
            assert isinstance(conn.ext, ConnectionExtRosbag1)
            fmt, qos = 'cdr', [_LATCHED_QOS] if conn.ext.latching else []
        return {'msgtype': conn.msgtype, 'msgdef': msgdef, 'rihs01': digest,
                'serialization_format': fmt, 'offered_qos_profiles': qos}


class OutputBag:
    """A ROS 2 bag written into a temporary directory and renamed into place on commit().

    Args:
        path: final bag directory (must not exist unless `overwrite`).
        storage: 'mcap' or 'sqlite3'.
        overwrite: replace an existing `path` on commit (the old one is kept until then).
    """

    def __init__(self, path: str | Path, storage: str = 'mcap', overwrite: bool = False) -> None:
        self.path = Path(path)
        if storage not in STORAGE_FORMATS:
            raise BagIOError(f'unknown output format {storage!r}: expected one of '
                             f'{", ".join(STORAGE_FORMATS)}')
        if self.path.exists() and not overwrite:
            raise BagIOError(f'output {self.path} already exists: choose a new path or pass '
                             f'--overwrite to replace it')
        if self.path.exists() and not self.path.is_dir():
            raise BagIOError(f'output {self.path} exists and is a file; a ROS 2 bag is a '
                             f'directory: remove it or choose another path')
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BagIOError(f'cannot create the output directory {parent}: {exc}') from exc
        self.storage = storage
        self.overwrite = overwrite
        self.tmp_root = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.partial-', dir=parent))
        self._writer: Writer | None = None
        self._closed = False
        self._conns: dict[tuple[Any, ...], Connection] = {}
        self._custom: dict[str, str] = {}

    def open(self) -> OutputBag:
        """Start writing. open/add_connection/write/close must run in one thread (sqlite3)."""
        self._writer = Writer(self.tmp_root / self.path.name, version=9,
                              storage_plugin=STORAGE_FORMATS[self.storage])
        try:
            self._writer.open()
        except Exception as exc:
            raise BagIOError(f'cannot create output bag in {self.tmp_root}: {exc}') from exc
        for key, value in self._custom.items():
            self._writer.set_custom_data(key, value)
        return self

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise BagIOError(f'output bag {self.path} is not open (not yet opened, or already '
                             f'closed or aborted)')
        return self._writer

    def set_custom_data(self, key: str, value: str) -> None:
        """Record a key in metadata.yaml's custom_data (call before open())."""
        self._custom[key] = value

    def add_connection(self, topic: str, *, msgtype: str, msgdef: str, rihs01: str,
                       serialization_format: str = 'cdr',
                       offered_qos_profiles: Sequence[Qos] = ()) -> Connection:
        """Register a topic (idempotent for identical specs, e.g. split or multi-file input)."""
        key = (topic, msgtype, serialization_format, repr(list(offered_qos_profiles)))
        if key not in self._conns:
            self._conns[key] = self.writer.add_connection(
                topic, msgtype, msgdef=msgdef, rihs01=rihs01,
                serialization_format=serialization_format,
                offered_qos_profiles=list(offered_qos_profiles))
        return self._conns[key]

    def write(self, conn: Connection, t_ns: int, data: bytes | memoryview) -> None:
        self.writer.write(conn, t_ns, data)

    def close(self) -> None:
        """Finish writing (index, metadata.yaml) in the staging directory."""
        writer, self._writer = self.writer, None
        writer.close()
        self._closed = True

    def commit(self) -> Path:
        """Move the finished bag to `path` (closing it first if needed). Returns `path`."""
        try:
            if not self._closed:
                self.close()
            staged = self.tmp_root / self.path.name
            old = self.tmp_root / (self.path.name + '.replaced')
            if self.path.exists():  # only with overwrite (checked in __init__)
                # A directory cannot be atomically replaced: move the old one aside first and
                # back again if the new one cannot be moved in, so a failure never loses both.
                os.replace(self.path, old)
            try:
                os.replace(staged, self.path)
            except BaseException:
                if old.exists():
                    os.replace(old, self.path)
                raise
        finally:
            shutil.rmtree(self.tmp_root, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Discard everything written; OUTPUT is left as it was. Safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # e.g. sqlite3 from another thread; the files go below anyway
                pass
        shutil.rmtree(self.tmp_root, ignore_errors=True)
