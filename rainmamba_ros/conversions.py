"""sensor_msgs/Image and CompressedImage <-> numpy RGB arrays, without rclpy.

Pure functions, duck-typed on message attributes (`height`, `width`, `encoding`, `step`, `data`,
`format`), so they serve rclpy messages in the node and rosbags dataclasses in offline replay.

Glossary: H, W = image height and width in pixels; bpp = bytes per pixel of the wire encoding;
step = bytes per row on the wire (>= W * bpp; drivers may pad rows).

Copies: a tightly packed or row-padded `rgb8` message is returned as a view on the message buffer
(no copy; it may be read-only and strided). Every other encoding needs exactly one pass (OpenCV's
colour conversion) that writes a new contiguous array. On the way out, `rgb8` from a contiguous
array is a view too; the caller makes the one copy the middleware needs (`as_msg_data`).

Colour conventions:
- YUV 4:2:2 is BT.601 limited range, as OpenCV decodes it (`COLOR_YUV2RGB_UYVY`/`_YUY2`).
  `yuv422` and `uyvy` are U0 Y0 V0 Y1; `yuv422_yuy2` and `yuyv` are Y0 U0 Y1 V0 (ROS
  sensor_msgs/image_encodings names).
- Bayer 8-bit: demosaiced on input (OpenCV bilinear); on output the RGB image is re-mosaiced,
  keeping at each pixel the channel its filter colour samples.
- mono8: gray is replicated to RGB on input; on output the BT.601 luma of the RGB image is sent.
- rgba8/bgra8: alpha is dropped for processing; on output the caller passes the input's alpha
  (`extract_alpha`) so output alpha = input alpha, or alpha is opaque (255) when none is given.

cv_bridge is used for decoding when a ROS install provides a working one (the PyPI `cv-bridge`
wheel breaks on NumPy 2, so it is probed with a real conversion, not just imported); otherwise, and
for encodings cv_bridge does not name, the module's own NumPy/OpenCV path is used. The choice is
logged once.
"""
from __future__ import annotations

import array
import logging
from typing import Any

import cv2
import numpy as np

from rainmamba_core.errors import RainMambaError

__all__ = [
    'ImageConversionError', 'SUPPORTED_ENCODINGS', 'image_to_rgb', 'rgb_to_image_fields',
    'compressed_to_rgb', 'rgb_to_compressed', 'extract_alpha', 'check_image', 'as_msg_data',
    'compressed_source_encoding', 'conversion_backend', 'ImageRecord',
]

_LOG = logging.getLogger(__name__)


class ImageConversionError(RainMambaError, ValueError):
    """An image message could not be converted; the message says what was wrong and why.

    Attributes:
        kind: short category for counters: 'encoding', 'size', 'step', 'length', 'odd_width',
            'decode' or 'array'.
    """

    def __init__(self, message: str, kind: str = 'decode') -> None:
        super().__init__(message)
        self.kind = kind


# Bytes per pixel of each supported wire encoding.
_BPP: dict[str, int] = {
    'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1,
    'yuv422': 2, 'uyvy': 2, 'yuv422_yuy2': 2, 'yuyv': 2,
    'bayer_rggb8': 1, 'bayer_bggr8': 1, 'bayer_gbrg8': 1, 'bayer_grbg8': 1,
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_BPP)

# OpenCV's legacy Bayer names count from the second row, so ROS `rggb` is OpenCV `BG`.
# These legacy constants exist in every OpenCV 3/4/5; the tests pin the mapping with pure colours.
_BAYER_TO_RGB = {
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
}
# Filter colour (0=R, 1=G, 2=B) at (row % 2, col % 2) for each pattern.
_BAYER_LAYOUT = {
    'bayer_rggb8': ((0, 1), (1, 2)), 'bayer_bggr8': ((2, 1), (1, 0)),
    'bayer_gbrg8': ((1, 2), (0, 1)), 'bayer_grbg8': ((1, 0), (2, 1)),
}
_UYVY = ('yuv422', 'uyvy')
_YUYV = ('yuv422_yuy2', 'yuyv')

# BT.601 limited range RGB -> YUV, the inverse of OpenCV's YUV2RGB_UYVY decoding. Used only when
# this OpenCV lacks COLOR_RGB2YUV_UYVY (added in 4.x releases after many robots' system OpenCV).
_Y_COEF = np.array([0.256788, 0.504129, 0.097906], np.float32)
_U_COEF = np.array([-0.148223, -0.290993, 0.439216], np.float32)
_V_COEF = np.array([0.439216, -0.367788, -0.071427], np.float32)


def _fail(msg: str, kind: str = 'decode') -> ImageConversionError:
    return ImageConversionError(msg, kind)


def _supported_list() -> str:
    return ', '.join(SUPPORTED_ENCODINGS)


def _normalise_encoding(encoding: str) -> str:
    return str(encoding).strip().lower()


def _buffer(data: Any) -> np.ndarray:
    """Flat uint8 view on a message's `data` (array.array, bytes, memoryview or ndarray)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # A plain list of ints (hand-built messages): one unavoidable copy.
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def check_image(msg: Any) -> tuple[str, int, int, int, int]:
    """Validate an Image-like message's geometry without converting it (O(1)).

    Args:
        msg: object with `height`, `width`, `encoding`, `step` and `data`.

    Returns:
        (encoding, height, width, step, bytes per pixel), the encoding normalised to lower case.

    Raises:
        ImageConversionError: unsupported encoding, zero size, step too small, wrong data length,
            or odd width for YUV 4:2:2.
    """
    encoding = _normalise_encoding(getattr(msg, 'encoding', ''))
    if encoding not in _BPP:
        raise _fail(f"unsupported image encoding '{encoding}': expected one of "
                    f'{_supported_list()}; convert the stream upstream (e.g. image_proc) or '
                    f'publish one of these', 'encoding')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    bpp = _BPP[encoding]
    if height <= 0 or width <= 0:
        raise _fail(f'image has zero size ({width}x{height}, encoding {encoding}): expected '
                    f'width and height > 0', 'size')
    if step < width * bpp:
        raise _fail(f'image step {step} is smaller than width*bytes_per_pixel = {width}*{bpp} = '
                    f'{width * bpp} for {encoding} {width}x{height}: the row stride must cover a '
                    f'whole row', 'step')
    n = len(msg.data)
    if n != step * height:
        raise _fail(f'image data has {n} bytes, expected step*height = {step}*{height} = '
                    f'{step * height} for {encoding} {width}x{height}', 'length')
    if encoding in _UYVY + _YUYV and width % 2:
        raise _fail(f'{encoding} image width {width} is odd: YUV 4:2:2 packs pixel pairs, so the '
                    f'width must be even', 'odd_width')
    return encoding, height, width, step, bpp


def _pixels(msg: Any) -> tuple[str, np.ndarray]:
    """(encoding, (H, W, bpp) uint8 view) of a validated message, honouring row padding."""
    encoding, height, width, step, bpp = check_image(msg)
    buf = _buffer(msg.data)
    rows = buf.reshape(height, step)
    if step != width * bpp:
        rows = rows[:, :width * bpp]  # drop row padding: still a view
    return encoding, rows.reshape(height, width, bpp)


# --------------------------------------------------------------------------- cv_bridge probe
_BRIDGE: Any = None
_BRIDGE_PROBED = False
# Encodings cv_bridge decodes to rgb8 itself (its `uyvy`/`yuyv` aliases vary by release).
_BRIDGE_ENCODINGS = frozenset({'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'yuv422',
                               'bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8', 'bayer_grbg8'})


def _bridge() -> Any:
    """A working cv_bridge.CvBridge, or None (decided once, logged once)."""
    global _BRIDGE, _BRIDGE_PROBED
    if _BRIDGE_PROBED:
        return _BRIDGE
    _BRIDGE_PROBED = True
    try:
        from cv_bridge import CvBridge  # only in a ROS install (or the broken PyPI wheel)

        bridge = CvBridge()
        probe = bridge.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), encoding='bgr8')
        out = bridge.imgmsg_to_cv2(probe, desired_encoding='rgb8')
        if out.shape != (2, 2, 3):
            raise RuntimeError(f'probe returned shape {out.shape}')
        _BRIDGE = bridge
        _LOG.info('image conversions: using cv_bridge for decoding')
    except Exception as exc:  # ImportError, or numpy-2 ABI errors from the PyPI wheel
        _BRIDGE = None
        # Not a problem (the built-in path is exact and tested) and the start-up line names the
        # path in use: only at debug level, so it is not repeated as news on every start.
        _LOG.debug('image conversions: cv_bridge unavailable (%s: %s); using the built-in '
                   'NumPy/OpenCV path', type(exc).__name__, exc)
    return _BRIDGE


def conversion_backend() -> str:
    """'cv_bridge' or 'numpy': which path `image_to_rgb` uses for cv_bridge-known encodings."""
    return 'cv_bridge' if _bridge() is not None else 'numpy'


# --------------------------------------------------------------------------- decoding
def image_to_rgb(msg: Any, use_bridge: bool | None = None) -> np.ndarray:
    """Decode a sensor_msgs/Image-like message to RGB.

    Args:
        msg: Image-like (rclpy message or rosbags dataclass).
        use_bridge: None = cv_bridge when a working one is installed; False forces the built-in
            path; True requires cv_bridge.

    Returns:
        (H, W, 3) uint8 RGB. For `rgb8` this is a view on `msg.data` (may be read-only and
        row-strided); otherwise a new contiguous array.

    Raises:
        ImageConversionError: see `check_image`.
    """
    encoding, px = _pixels(msg)
    bridge = _bridge() if use_bridge is None else (_bridge() if use_bridge else None)
    if use_bridge and bridge is None:
        raise _fail('use_bridge=True but cv_bridge is not importable or not working with this '
                    'NumPy; install the ROS cv_bridge or pass use_bridge=None')
    if bridge is not None and encoding in _BRIDGE_ENCODINGS and encoding != 'rgb8':
        try:
            return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
        except Exception as exc:  # cv_bridge raises its own error types
            raise _fail(f'cv_bridge failed on {encoding} {msg.width}x{msg.height}: {exc}') from exc
    return _decode(encoding, px)


def _decode(encoding: str, px: np.ndarray) -> np.ndarray:
    """px: (H, W, bpp) uint8 view -> (H, W, 3) uint8 RGB."""
    if encoding == 'rgb8':
        return px
    if encoding == 'bgr8':
        return cv2.cvtColor(px, cv2.COLOR_BGR2RGB)
    if encoding == 'rgba8':
        return cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)
    if encoding == 'bgra8':
        return cv2.cvtColor(px, cv2.COLOR_BGRA2RGB)
    if encoding == 'mono8':
        return cv2.cvtColor(px[..., 0], cv2.COLOR_GRAY2RGB)
    if encoding in _UYVY:
        return cv2.cvtColor(px, cv2.COLOR_YUV2RGB_UYVY)
    if encoding in _YUYV:
        return cv2.cvtColor(px, cv2.COLOR_YUV2RGB_YUY2)
    return cv2.cvtColor(px[..., 0], _BAYER_TO_RGB[encoding])


def extract_alpha(msg: Any) -> np.ndarray | None:
    """(H, W) uint8 alpha view of an rgba8/bgra8 message; None for encodings without alpha."""
    encoding, px = _pixels(msg)
    if encoding in ('rgba8', 'bgra8'):
        return px[..., 3]
    return None


# --------------------------------------------------------------------------- encoding
def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        shape = getattr(rgb, 'shape', None)
        dtype = getattr(rgb, 'dtype', type(rgb).__name__)
        raise _fail(f'expected an (H, W, 3) uint8 RGB array with H, W > 0, got shape {shape} '
                    f'dtype {dtype}', 'array')


def _rgb_to_yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """rgb: (H, W, 3) uint8, W even -> (H, W, 2) uint8 packed 4:2:2 (NumPy fallback)."""
    f = rgb.astype(np.float32)
    y = f @ _Y_COEF + 16.0                                  # (H, W)
    pair = 0.5 * (f[:, 0::2] + f[:, 1::2])                  # (H, W/2, 3) chroma of each pixel pair
    u = pair @ _U_COEF + 128.0
    v = pair @ _V_COEF + 128.0
    out = np.empty(rgb.shape[:2] + (2,), np.uint8)
    y8 = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    c = np.empty(rgb.shape[:2], np.uint8)
    c[:, 0::2] = np.clip(np.rint(u), 0, 255)
    c[:, 1::2] = np.clip(np.rint(v), 0, 255)
    if uyvy:
        out[..., 0], out[..., 1] = c, y8
    else:
        out[..., 0], out[..., 1] = y8, c
    return out


def _mosaic(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """rgb: (H, W, 3) -> (H, W) raw Bayer mosaic of `encoding`."""
    raw = np.empty(rgb.shape[:2], np.uint8)
    for dr, row in enumerate(_BAYER_LAYOUT[encoding]):
        for dc, channel in enumerate(row):
            raw[dr::2, dc::2] = rgb[dr::2, dc::2, channel]
    return raw


def rgb_to_image_fields(rgb: np.ndarray, encoding: str,
                        alpha: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Encode RGB into `encoding` (the input's) for an outgoing Image message.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        encoding: one of SUPPORTED_ENCODINGS.
        alpha: (H, W) uint8 alpha for rgba8/bgra8 (normally `extract_alpha(input_msg)`);
            None = opaque 255. Ignored for other encodings.

    Returns:
        (flat uint8 data, step) with step = W * bytes_per_pixel (no row padding). For `rgb8` from
        a contiguous array the data is a view on `rgb`.

    Raises:
        ImageConversionError: unsupported encoding, wrong array shape or dtype, odd width for
            YUV 4:2:2, alpha of the wrong shape.
    """
    _check_rgb(rgb)
    enc = _normalise_encoding(encoding)
    if enc not in _BPP:
        raise _fail(f"cannot encode to '{enc}': expected one of {_supported_list()}", 'encoding')
    height, width = rgb.shape[:2]
    if enc == 'rgb8':
        out = np.ascontiguousarray(rgb)
    elif enc == 'bgr8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif enc in ('rgba8', 'bgra8'):
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA if enc == 'rgba8' else cv2.COLOR_RGB2BGRA)
        if alpha is not None:
            if alpha.shape != (height, width):
                raise _fail(f'alpha has shape {alpha.shape}, expected {(height, width)} to match '
                            f'the RGB image')
            out[..., 3] = alpha
    elif enc == 'mono8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif enc in _UYVY + _YUYV:
        if width % 2:
            raise _fail(f'cannot encode {enc} with odd width {width}: YUV 4:2:2 packs pixel '
                        f'pairs')
        uyvy = enc in _UYVY
        code = getattr(cv2, 'COLOR_RGB2YUV_UYVY' if uyvy else 'COLOR_RGB2YUV_YUY2', None)
        out = cv2.cvtColor(rgb, code) if code is not None else _rgb_to_yuv422(rgb, uyvy)
    else:
        out = _mosaic(rgb, enc)
    return out.reshape(-1), width * _BPP[enc]


def as_msg_data(flat: np.ndarray) -> array.array:
    """The one copy into the array.array('B') that rclpy's Image.data setter accepts as is.

    Assigning bytes or an ndarray makes rclpy check every element in Python (tens of ms per VGA
    frame); an array.array of typecode 'B' is stored without that check.
    """
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(flat)).cast('B'))
    return out


# --------------------------------------------------------------------------- compressed
def compressed_source_encoding(fmt: str) -> str | None:
    """The raw encoding named in a CompressedImage `format` ("bgr8; jpeg compressed bgr8").

    Returns None for a bare "jpeg"/"png" (image_transport then means bgr8) or an unsupported one.
    """
    head = str(fmt).split(';', 1)[0].strip().lower()
    return head if head in _BPP else None


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage-like message (JPEG or PNG) to (H, W, 3) uint8 RGB.

    Raises:
        ImageConversionError: empty data, compressedDepth (16-bit depth) payloads, or bytes
            OpenCV cannot decode.
    """
    fmt = str(getattr(msg, 'format', ''))
    if 'compresseddepth' in fmt.lower():
        raise _fail(f"compressed format '{fmt}' is a depth image (compressedDepth): expected a "
                    f'colour or mono jpeg/png stream', 'encoding')
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise _fail(f"compressed image (format '{fmt}') has no data", 'size')
    # Decode as stored (IMREAD_COLOR would silently squeeze a 16-bit PNG to 8 bits and derain
    # it): anything but 8-bit grey, colour or colour + alpha is refused like raw 16UC1 is.
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise _fail(f"compressed image (format '{fmt}', {buf.size} bytes) could not be decoded: "
                    f'expected jpeg or png bytes')
    if img.dtype != np.uint8:
        raise _fail(f"compressed image (format '{fmt}') holds {img.dtype} samples "
                    f'({8 * img.dtype.itemsize}-bit): expected 8-bit jpeg/png (mono8, bgr8, rgb8, '
                    f'bgra8, rgba8)', 'encoding')
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        raise _fail(f"compressed image (format '{fmt}') has {channels} channels: expected 1, 3 "
                    'or 4', 'encoding')
    if channels == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(rgb: np.ndarray, fmt: str, jpeg_quality: int = 90) -> bytes:
    """Encode (H, W, 3) uint8 RGB as JPEG or PNG bytes.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        fmt: 'jpeg'/'jpg'/'png', or a CompressedImage format string containing one of them.
        jpeg_quality: 0..100.

    Raises:
        ImageConversionError: unknown format or encoder failure.
    """
    _check_rgb(rgb)
    low = str(fmt).lower()
    if 'png' in low:
        ext, params = '.png', []
    elif 'jpeg' in low or 'jpg' in low:
        ext, params = '.jpg', [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    else:
        raise _fail(f"cannot compress to format '{fmt}': expected jpeg or png")
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise _fail(f'OpenCV failed to encode a {rgb.shape[1]}x{rgb.shape[0]} image as {ext}')
    return enc.tobytes()


# --------------------------------------------------------------------------- stand-in message
class ImageRecord:
    """Minimal sensor_msgs/Image-like record (the fields the conversions read), for timing and
    tests where no message package is installed."""

    def __init__(self, height: int, width: int, encoding: str, step: int, data: Any) -> None:
        self.height, self.width, self.encoding, self.step, self.data = (
            height, width, encoding, step, data)
        self.is_bigendian = 0
