#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/: minimal valid inputs of each
format and a few truncated ones, in the input layout each fuzz target documents. Run it
again after changing a layout; the files are deterministic (gzip mtime 0)."""
import gzip
import json
import pathlib
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def idx_images(n: int, h: int, w: int) -> bytes:
    pixels = bytes((i * 37 + 11) % 256 for i in range(n * h * w))
    return struct.pack(">IIII", 0x00000803, n, h, w) + pixels


def idx_labels(n: int) -> bytes:
    return struct.pack(">II", 0x00000801, n) + bytes((i * 3) % 10 for i in range(n))


def cifar_records(n: int) -> bytes:
    out = b""
    for r in range(n):
        out += bytes([r % 10]) + bytes((r * 13 + p) % 256 for p in range(3072))
    return out


def cifar100_records(n: int) -> bytes:
    out = b""
    for r in range(n):
        out += bytes([r % 20, (r * 7) % 100]) + bytes((r * 11 + p) % 256 for p in range(3072))
    return out


def safetensors(tensors, metadata=None) -> bytes:
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    return safetensors_raw(json.dumps(header, separators=(",", ":")).encode(), data)


def safetensors_raw(text: bytes, data: bytes) -> bytes:
    """A file from header text as given (a dict cannot hold duplicate names)."""
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(target: str, files: dict) -> None:
    folder = ROOT / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def main() -> None:
    images, labels = idx_images(2, 4, 3), idx_labels(2)
    big = idx_images(2, 28, 28)
    write("idx_fuzz", {
        "images_raw": b"\x00" + images,
        "images_gz": b"\x00" + gz(images),
        "images_28x28_gz": b"\x00" + gz(big),
        "labels_raw": b"\x01" + labels,
        "labels_gz": b"\x01" + gz(labels),
        "images_truncated_header": b"\x00" + images[:10],
        "images_truncated_data": b"\x00" + images[:-5],
        "images_gz_truncated": b"\x00" + gz(big)[:-20],
        "labels_extra_byte": b"\x01" + labels + b"\x07",
        "labels_wrong_magic": b"\x00" + labels,
        "images_huge_extent": b"\x00" + struct.pack(">IIII", 0x00000803, 1 << 31, 1, 1),
        # A gzip stream holding more than its header promises (a small bomb).
        "images_gz_header_lies": b"\x00" + gz(struct.pack(">IIII", 0x00000803, 1, 2, 2)
                                               + bytes(4096)),
    })

    def split(flags: int, images_file: bytes, labels_file: bytes) -> bytes:
        return bytes([flags]) + struct.pack("<I", len(images_file)) + images_file + labels_file

    write("fashion_mnist_fuzz", {
        "raw": split(0, images, labels),
        "gz": split(4 | 8, gz(images), gz(labels)),
        "limit1_mixed": split(1 | 4, gz(images), labels),
        "count_mismatch": split(0, images, idx_labels(3)),
        "labels_truncated": split(8, gz(images), gz(labels)[:-6]),
        "bad_label": split(0, images, labels[:-1] + b"\x0b"),
        "gz_28x28": split(4 | 8, gz(big), gz(labels)),
        "labels_missing": split(0, images, b""),
    })

    one, two = cifar_records(1), cifar_records(2)
    write("cifar10_fuzz", {
        "file_1_record": b"\x04" + one,
        "folder_1_record": b"\x00" + one,
        "file_2_records_limit1": b"\x05" + two,
        "truncated_record": b"\x04" + two[:-100],
        "bad_label": b"\x04" + b"\x0a" + one[1:],
        "cifar100_file_1_record": b"\x0c" + cifar100_records(1),
        "cifar100_folder_2_records": b"\x08" + cifar100_records(2),
        "cifar100_bad_coarse": b"\x0c" + b"\x14" + cifar100_records(1)[1:],
    })

    f32 = struct.pack("<4f", 1.0, -2.0, 3.5, 0.0)
    i32 = struct.pack("<2i", 7, -1)
    two_tensors = safetensors([("w", "F32", [4], f32), ("b", "I32", [2], i32)])
    write("safetensors_fuzz", {
        "two_tensors": two_tensors,
        "all_dtypes_metadata": safetensors(
            [("w", "F32", [4], f32), ("b", "I32", [2], i32),
             ("h", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0xC000, 0x7BFF, 1)),
             ("bf", "BF16", [2], struct.pack("<2H", 0x3F80, 0x4049)),
             ("s", "F32", [], struct.pack("<f", 42.0)), ("e", "F32", [0, 3], b"")],
            {"epoch": "3", "model": "resnet18"}),
        "wrong_shape": safetensors([("w", "F32", [2, 2], f32)]),
        "truncated_header": two_tensors[:40],
        "truncated_data": two_tensors[:-3],
        "duplicate_names": safetensors_raw(
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', f32),
        "huge_shape": safetensors([("w", "F32", [1 << 40, 1 << 40], f32)]),
        "overlapping_offsets": safetensors_raw(
            b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
            b'"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}', f32),
        "unknown_dtype": safetensors([("w", "F64", [2], f32)]),
        "header_length_huge": struct.pack("<Q", 1 << 62) + two_tensors[8:],
    })

    write("image_fuzz", image_seeds())


def image_seeds() -> dict:
    """Small JPEG and PNG files of the kinds photos come in (needs Pillow: Debian's
    python3-pil), each behind the target's option byte."""
    import io
    from PIL import Image

    def encoded(image, fmt, **options):
        out = io.BytesIO()
        image.save(out, fmt, **options)
        return out.getvalue()

    rgb = Image.frombytes("RGB", (40, 30), bytes((i * 7 + (i // 120) * 3) % 256
                                                for i in range(40 * 30 * 3)))
    files = {
        "jpeg_420": encoded(rgb, "JPEG", quality=90),
        "jpeg_444_progressive": encoded(rgb, "JPEG", quality=75, subsampling=0,
                                        progressive=True),
        "jpeg_gray": encoded(rgb.convert("L"), "JPEG"),
        "jpeg_cmyk": encoded(rgb.convert("CMYK"), "JPEG"),
        "png_rgb": encoded(rgb, "PNG"),
        "png_palette": encoded(rgb.convert("P"), "PNG"),
        "png_gray_alpha": encoded(rgb.convert("LA"), "PNG"),
        "png_16bit": encoded(rgb.convert("L").convert("I"), "PNG"),
    }
    files["jpeg_truncated"] = files["jpeg_420"][: len(files["jpeg_420"]) * 2 // 3]
    files["png_truncated"] = files["png_rgb"][: len(files["png_rgb"]) // 2]
    seeds = {}
    for index, (name, data) in enumerate(sorted(files.items())):
        option = index % 16  # spread the seeds over the option byte's settings
        seeds[name] = bytes([option]) + data
    return seeds


if __name__ == "__main__":
    main()
