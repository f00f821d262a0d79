"""Image message <-> RGB conversions (rainmamba_ros.conversions), without a ROS graph.

Messages are real sensor_msgs ones (rclpy's, data as array.array; rosbags', data as ndarray);
the bare record `ImageRecord` (as `_Msg`) stands in only where sensor_msgs is not installed and for data held as
`bytes`. Expected bytes of the colour encodings are laid out by hand (pixel_standin), so a
channel-order bug in both directions cannot pass a round trip.
"""
from __future__ import annotations

import array
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pixel_standin import encode_by_hand

from rainmamba_ros import conversions as conv
from rainmamba_ros.bench.conversions import benchmark
from rainmamba_ros.conversions import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    as_msg_data,
    check_image,
    compressed_source_encoding,
    compressed_to_rgb,
    extract_alpha,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)
from rainmamba_ros.conversions import ImageRecord as _Msg

try:
    from sensor_msgs.msg import CompressedImage, Image
except ImportError:  # no ROS 2 wheels: the bare record (the conversions need only the fields)
    CompressedImage = Image = None

H, W = 6, 10
LOSSLESS = ('rgb8', 'bgr8', 'rgba8', 'bgra8')
YUV = ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv')
BAYER = ('bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8', 'bayer_grbg8')


def _rgb(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _image(height: int, width: int, encoding: str, step: int, data: Any) -> Any:
    """A sensor_msgs/Image (rclpy) with these fields; the bare record without the ROS wheels."""
    if Image is None:
        return _Msg(height, width, encoding, step, as_msg_data(np.frombuffer(bytes(data), np.uint8)))
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(data)
    return msg


def _rosbags_image(height: int, width: int, encoding: str, step: int, data: np.ndarray) -> Any:
    typesys = pytest.importorskip('rosbags.typesys', reason='rosbags not installed')
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    T = store.types
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=1, nanosec=2),
                                      frame_id='cam')
    return T['sensor_msgs/msg/Image'](header=header, height=height, width=width,
                                      encoding=encoding, is_bigendian=0, step=step, data=data)


def _compressed(fmt: str, data: bytes) -> Any:
    if CompressedImage is None:
        return SimpleNamespace(format=fmt, data=data)  # the two fields the conversions read
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def _msg(rgb: np.ndarray, encoding: str, pad: int = 0, data_type: str = 'rclpy') -> Any:
    """A message of `rgb` in `encoding`, rows padded by `pad` bytes: 'rclpy' (sensor_msgs, data
    array.array), 'rosbags' (data ndarray) or 'bytes' (a bare record whose data is bytes)."""
    if encoding in LOSSLESS:
        data, step = encode_by_hand(rgb, encoding)
        flat = np.frombuffer(data, np.uint8)
    else:
        flat, step = rgb_to_image_fields(rgb, encoding)
    rows = flat.reshape(rgb.shape[0], step)
    if pad:
        rows = np.concatenate([rows, np.full((rows.shape[0], pad), 77, np.uint8)], axis=1)
    h, w = rgb.shape[:2]
    if data_type == 'rosbags':
        return _rosbags_image(h, w, encoding, step + pad, rows.reshape(-1).copy())
    if data_type == 'bytes':
        return _Msg(h, w, encoding, step + pad, rows.tobytes())
    return _image(h, w, encoding, step + pad, rows.tobytes())


def test_supported_encodings_listed() -> None:
    # The list: 4 colour, mono, 2 YUV layouts under 2 names each, 4 Bayer patterns.
    assert set(SUPPORTED_ENCODINGS) == set(LOSSLESS + ('mono8',) + YUV + BAYER)


@pytest.mark.parametrize('encoding', LOSSLESS)
@pytest.mark.parametrize('data_type', ['rclpy', 'bytes', 'rosbags'])
def test_lossless_decode_and_encode_exact(encoding: str, data_type: str) -> None:
    # The message bytes are laid out by hand: decoding must give the RGB they were made from and
    # encoding must give back the very bytes (each direction pinned on its own).
    rgb = _rgb()
    msg = _msg(rgb, encoding, data_type=data_type)
    out = image_to_rgb(msg, use_bridge=False)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    flat, step = rgb_to_image_fields(rgb, encoding)
    assert (flat.tobytes(), step) == encode_by_hand(rgb, encoding)


def test_rgb8_decodes_as_a_view_without_copy() -> None:
    msg = _msg(_rgb(), 'rgb8')
    assert isinstance(msg.data, array.array) or Image is None  # what rclpy delivers
    out = image_to_rgb(msg, use_bridge=False)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_rgb8_encodes_as_a_view_without_copy() -> None:
    rgb = _rgb()
    flat, step = rgb_to_image_fields(rgb, 'rgb8')
    assert np.shares_memory(flat, rgb) and step == W * 3


def test_channel_order_is_pinned() -> None:
    # A pure red image must put 255 in the first byte for rgb8 and the third for bgr8.
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert rgb_to_image_fields(red, 'rgb8')[0][:3].tolist() == [255, 0, 0]
    assert rgb_to_image_fields(red, 'bgr8')[0][:3].tolist() == [0, 0, 255]
    assert rgb_to_image_fields(red, 'bgra8')[0][:4].tolist() == [0, 0, 255, 255]


@pytest.mark.parametrize('encoding', ['rgba8', 'bgra8'])
def test_alpha_is_reattached(encoding: str) -> None:
    rgb = _rgb()
    alpha = np.random.default_rng(5).integers(0, 256, (H, W), dtype=np.uint8)
    flat, step = rgb_to_image_fields(rgb, encoding, alpha=alpha)
    msg = _image(H, W, encoding, step, flat)
    np.testing.assert_array_equal(extract_alpha(msg), alpha)
    # Without an alpha the output is opaque.
    opaque, _ = rgb_to_image_fields(rgb, encoding)
    assert (opaque.reshape(H, W, 4)[..., 3] == 255).all()
    assert extract_alpha(_msg(rgb, 'rgb8')) is None


def test_mono8_round_trip() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    msg = _image(H, W, 'mono8', W, gray)
    rgb = image_to_rgb(msg, use_bridge=False)
    assert (rgb == gray[..., None]).all()  # gray replicated to the three channels
    flat, step = rgb_to_image_fields(rgb, 'mono8')
    # Luma weights sum to 1, so gray -> RGB -> luma is exact.
    assert step == W
    np.testing.assert_array_equal(flat.reshape(H, W), gray)


@pytest.mark.parametrize('encoding', YUV)
def test_yuv422_round_trip(encoding: str) -> None:
    # Chroma is shared by a pixel pair, so the source is constant within each horizontal pair:
    # then 4:2:2 subsampling loses nothing and only quantisation remains.
    yy, xx = np.mgrid[0:H, 0:W]
    xx = xx // 2
    smooth = np.stack([40 + 30 * xx, 60 + 10 * yy, 200 - 16 * xx], -1).astype(np.uint8)
    msg = _msg(smooth, encoding)
    rgb = image_to_rgb(msg, use_bridge=False)
    # Colour side: one Y step is ~1.16 RGB levels in BT.601 limited range, plus rounding in
    # each direction: at most 2 levels.
    assert np.abs(rgb.astype(int) - smooth).max() <= 2
    flat, step = rgb_to_image_fields(rgb, encoding)
    assert step == 2 * W
    # Re-encoding rounds once more: allow 1 level on the wire.
    assert np.abs(flat.astype(int) - np.frombuffer(msg.data, np.uint8)).max() <= 1


@pytest.mark.parametrize('encoding', ['uyvy', 'yuyv'])
def test_yuv_layout_order(encoding: str) -> None:
    # Gray has U = V = 128; Y of white in limited range is 235. Pins which byte is luma.
    white = np.full((2, 4, 3), 255, np.uint8)
    flat, _ = rgb_to_image_fields(white, encoding)
    first4 = flat[:4].tolist()
    assert first4 == ([128, 235, 128, 235] if encoding == 'uyvy' else [235, 128, 235, 128])


@pytest.mark.parametrize('encoding', ['yuv422', 'yuv422_yuy2'])
def test_yuv_numpy_fallback_matches_opencv(encoding: str) -> None:
    rgb = _rgb(8, 12, seed=3)
    ref, _ = rgb_to_image_fields(rgb, encoding)
    ours = conv._rgb_to_yuv422(rgb, uyvy=encoding == 'yuv422').reshape(-1)
    # Float coefficients vs OpenCV's fixed-point arithmetic: one level of rounding difference.
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize('encoding', BAYER)
def test_bayer_round_trip_keeps_the_samples(encoding: str) -> None:
    raw = np.random.default_rng(2).integers(0, 256, (H, W), dtype=np.uint8)
    msg = _image(H, W, encoding, W, raw)
    rgb = image_to_rgb(msg, use_bridge=False)
    assert rgb.shape == (H, W, 3)
    flat, step = rgb_to_image_fields(rgb, encoding)
    # Bilinear demosaicing keeps every sensor sample in its own channel away from the border
    # (OpenCV replicates border rows/columns), so re-mosaicing restores the interior exactly.
    back = flat.reshape(H, W)
    np.testing.assert_array_equal(back[1:-1, 1:-1], raw[1:-1, 1:-1])


@pytest.mark.parametrize('encoding', BAYER)
@pytest.mark.parametrize('colour', [0, 1, 2])
def test_bayer_pattern_decodes_pure_colours(encoding: str, colour: int) -> None:
    # Independent of OpenCV's naming: a pure colour mosaiced with the pattern decodes to itself.
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., colour] = 200
    flat, _ = rgb_to_image_fields(img, encoding)
    out = image_to_rgb(_image(8, 8, encoding, 8, flat), use_bridge=False)
    np.testing.assert_array_equal(out[2:-2, 2:-2], img[2:-2, 2:-2])


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_step_padding_is_respected(encoding: str) -> None:
    rgb = _rgb()
    plain = image_to_rgb(_msg(rgb, encoding), use_bridge=False)
    padded = image_to_rgb(_msg(rgb, encoding, pad=6), use_bridge=False)
    np.testing.assert_array_equal(padded, plain)


def test_encoding_is_case_insensitive() -> None:
    rgb = _rgb()
    msg = _msg(rgb, 'bgr8')
    msg.encoding = 'BGR8'
    np.testing.assert_array_equal(image_to_rgb(msg, use_bridge=False), rgb)


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1', 'rgb16', 'bgra16', 'nv21', ''])
def test_unsupported_encoding_is_named(encoding: str) -> None:
    msg = _image(2, 2, encoding, 8, bytes(16))
    with pytest.raises(ImageConversionError) as err:
        image_to_rgb(msg)
    text = str(err.value)
    assert f"'{encoding.lower()}'" in text and 'rgb8' in text and 'bayer_grbg8' in text


def test_wrong_data_length_names_the_numbers() -> None:
    msg = _image(4, 5, 'rgb8', 15, bytes(59))
    with pytest.raises(ImageConversionError, match=r'59 bytes, expected step\*height = 15\*4 = 60'):
        image_to_rgb(msg)


def test_step_too_small_names_the_numbers() -> None:
    msg = _image(4, 5, 'bgra8', 19, bytes(76))
    with pytest.raises(ImageConversionError, match=r'step 19 .* 5\*4 = 20'):
        check_image(msg)


@pytest.mark.parametrize('h, w', [(0, 4), (4, 0), (0, 0)])
def test_zero_size_is_refused(h: int, w: int) -> None:
    with pytest.raises(ImageConversionError, match=rf'zero size \({w}x{h}'):
        image_to_rgb(_image(h, w, 'rgb8', w * 3, b''))


def test_odd_width_yuv_is_refused() -> None:
    with pytest.raises(ImageConversionError, match='width 5 is odd'):
        image_to_rgb(_image(2, 5, 'yuyv', 10, bytes(20)))
    with pytest.raises(ImageConversionError, match='odd width 5'):
        rgb_to_image_fields(_rgb(2, 5), 'uyvy')


def test_encode_refuses_bad_arrays_and_encodings() -> None:
    with pytest.raises(ImageConversionError, match=r'shape \(4, 4\)'):
        rgb_to_image_fields(np.zeros((4, 4), np.uint8), 'rgb8')
    with pytest.raises(ImageConversionError, match='dtype float32'):
        rgb_to_image_fields(np.zeros((4, 4, 3), np.float32), 'rgb8')
    with pytest.raises(ImageConversionError, match="'32fc1'"):
        rgb_to_image_fields(_rgb(), '32FC1')
    with pytest.raises(ImageConversionError, match=r'alpha has shape \(2, 2\)'):
        rgb_to_image_fields(_rgb(), 'rgba8', alpha=np.zeros((2, 2), np.uint8))


def test_as_msg_data_is_an_unsigned_byte_array() -> None:
    flat = np.arange(12, dtype=np.uint8)
    out = as_msg_data(flat)
    assert isinstance(out, array.array) and out.typecode == 'B' and list(out) == list(range(12))


@pytest.mark.parametrize('fmt', ['jpeg', 'png', 'bgr8; jpeg compressed bgr8'])
def test_compressed_round_trip(fmt: str) -> None:
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = np.stack([4 * xx, 6 * yy, 255 - 4 * xx], -1).astype(np.uint8)
    data = rgb_to_compressed(smooth, fmt)
    out = compressed_to_rgb(_compressed(fmt, data))
    assert out.shape == smooth.shape
    # PNG is lossless; JPEG at quality 90 on a smooth ramp stays within a few levels on average.
    limit = 0.0 if fmt == 'png' else 3.0
    assert np.abs(out.astype(float) - smooth).mean() <= limit


def test_compressed_errors_are_clear() -> None:
    with pytest.raises(ImageConversionError, match='no data'):
        compressed_to_rgb(_compressed('jpeg', b''))
    with pytest.raises(ImageConversionError, match='could not be decoded'):
        compressed_to_rgb(_compressed('jpeg', b'not a jpeg at all'))
    with pytest.raises(ImageConversionError, match='compressedDepth'):
        compressed_to_rgb(_compressed('16UC1; compressedDepth png', b'\x00' * 10))
    with pytest.raises(ImageConversionError, match="format 'tiff'"):
        rgb_to_compressed(_rgb(), 'tiff')


def test_compressed_source_encoding() -> None:
    assert compressed_source_encoding('rgb8; jpeg compressed bgr8') == 'rgb8'
    assert compressed_source_encoding('jpeg') is None
    assert compressed_source_encoding('16UC1; compressedDepth') is None


def test_works_with_rclpy_messages() -> None:
    sensor_msgs = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs wheel not installed')
    rgb = _rgb()
    flat, step = rgb_to_image_fields(rgb, 'bgr8')
    msg = sensor_msgs.Image(height=H, width=W, encoding='bgr8', step=step)
    msg.data = as_msg_data(flat)
    np.testing.assert_array_equal(image_to_rgb(msg, use_bridge=False), rgb)


def test_works_with_rosbags_messages() -> None:
    rosbags_typesys = pytest.importorskip('rosbags.typesys', reason='rosbags not installed')
    store = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_HUMBLE)
    Image = store.types['sensor_msgs/msg/Image']
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    rgb = _rgb()
    flat, step = rgb_to_image_fields(rgb, 'yuyv')
    msg = Image(header=Header(stamp=Time(sec=1, nanosec=2), frame_id='cam'), height=H, width=W,
                encoding='yuyv', is_bigendian=0, step=step, data=flat.copy())
    raw = store.serialize_cdr(msg, 'sensor_msgs/msg/Image')
    back = store.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    np.testing.assert_array_equal(image_to_rgb(back, use_bridge=False),
                                  image_to_rgb(msg, use_bridge=False))


def test_bridge_probe_reports_a_backend() -> None:
    assert conv.conversion_backend() in ('cv_bridge', 'numpy')
    if conv.conversion_backend() == 'numpy':
        with pytest.raises(ImageConversionError, match='cv_bridge is not importable'):
            image_to_rgb(_msg(_rgb(), 'bgr8'), use_bridge=True)


def test_benchmark_times_the_conversions() -> None:
    small = benchmark(width=32, height=16, repeats=5)
    large = benchmark(width=256, height=128, repeats=5)
    for res in (small, large):
        assert set(res) == set(SUPPORTED_ENCODINGS)
        for enc, v in res.items():
            # Every conversion does work: a median of 0 means the clock was not read around it.
            assert v['in_ms'] > 0 and v['out_ms'] > 0, enc
            assert v['total_ms'] == pytest.approx(v['in_ms'] + v['out_ms']), enc
    # 64 times the pixels must cost more in total over the 13 encodings. Not a speed bound: a
    # benchmark that times something else than the conversion (or one fixed frame) fails it;
    # medians of 5 and a 64x margin keep a loaded machine from inverting it.
    assert sum(v['total_ms'] for v in large.values()) > sum(v['total_ms'] for v in small.values())


@pytest.mark.parametrize('fields, kind', [
    ((2, 2, '16UC1', 4, bytes(8)), 'encoding'),
    ((0, 2, 'rgb8', 6, b''), 'size'),
    ((2, 2, 'rgb8', 5, bytes(10)), 'step'),
    ((2, 2, 'rgb8', 6, bytes(11)), 'length'),
    ((2, 3, 'uyvy', 6, bytes(12)), 'odd_width'),
])
def test_error_kind_for_counters(fields: tuple, kind: str) -> None:
    msg = _image(*fields)
    with pytest.raises(ImageConversionError) as err:
        check_image(msg)
    assert err.value.kind == kind
