"""Reads a PDF the way a customer's tools do, for the test suite.

Usage: pdf_probe.py FILE.pdf [PNG]

Prints JSON: the page count, the document title, the text of every page
extracted by pypdf, and page 1 rendered by PDFium (pypdfium2, Chrome's
PDF engine) at 72 dpi: its size, the colour at the middle of the
letterhead band and the share of dark (text) pixels. With PNG, page 1 is
also written there as an image (greyscale, no extra dependency) so a
person can look at it.
"""
import json
import sys
import zlib
import struct

import pypdf
import pypdfium2 as pdfium


def png(path, width, height, rows):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def main():
    path = sys.argv[1]
    reader = pypdf.PdfReader(path)
    text = [page.extract_text() for page in reader.pages]
    title = reader.metadata.title if reader.metadata else None

    doc = pdfium.PdfDocument(path)
    bitmap = doc[0].render(scale=1)
    arr = bitmap.to_numpy()  # height x width x 3 (BGR) or 4
    height, width = arr.shape[0], arr.shape[1]
    band = arr[18, width // 2]
    # PDFium renders BGR(x) by default.
    band_rgb = "#%02X%02X%02X" % (int(band[2]), int(band[1]), int(band[0]))
    body = arr[60:, :, :3]
    dark = float((body.max(axis=2) < 100).mean())
    if len(sys.argv) > 2:
        rgb = arr[:, :, [2, 1, 0]]
        png(sys.argv[2], width, height, [row.flatten().tolist() for row in rgb])
    print(json.dumps({
        "pages": len(reader.pages),
        "title": title,
        "text": text,
        "render": {"width": width, "height": height, "band_rgb": band_rgb, "dark_fraction": dark},
    }))


if __name__ == "__main__":
    main()
