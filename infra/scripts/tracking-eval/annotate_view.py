#!/usr/bin/env python3
"""Render frames for annotating people by eye: an enlarged crop with a pixel
grid and rulers, with the boxes already written (keyframes or interpolated)
drawn on top, so a person can read off and check box corners.

Usage: annotate_view.py FRAMES_DIR FRAME [FRAME ...] --out DIR
         [--crop x0,y0,x1,y1] [--scale S] [--stack] [--keys keyframes.txt | --gt gt.txt]

FRAMES_DIR holds fNNNN.png (0-based frame numbers, as ffmpeg writes them with
-start_number 0). Boxes are drawn from --keys (the keyframe file, MOT rows) or
--gt (the interpolated ground truth); rows for other frames are skipped.
"""
import argparse
import os
import sys

from PIL import Image, ImageDraw

COLOURS = [(255, 0, 0), (0, 90, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255),
           (255, 128, 0), (128, 0, 255), (0, 200, 0), (255, 255, 255), (0, 0, 0)]


def read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            p = [float(v) for v in line.split(",")]
            rows.append((int(p[0]), int(p[1]), p[2], p[3], p[4], p[5], p[6] if len(p) > 6 else 1.0))
    return rows


def render(frames_dir, frame, crop, scale, rows, out_dir):
    """The enlarged, gridded crop of one frame with its boxes, as an image."""
    path = os.path.join(frames_dir, f"f{frame:04d}.png")
    if not os.path.exists(path):
        sys.exit(f"no frame image {path}")
    img = Image.open(path).convert("RGB")
    x0, y0, x1, y1 = crop
    img = img.crop((x0, y0, x1, y1)).resize(((x1 - x0) * scale, (y1 - y0) * scale), Image.NEAREST)
    # A margin for the rulers.
    m = 28
    canvas = Image.new("RGB", (img.width + m, img.height + m), (40, 40, 40))
    canvas.paste(img, (m, m))
    d = ImageDraw.Draw(canvas)
    # Grid every 10 source pixels (faint), every 50 stronger, labelled.
    for x in range((x0 // 10 + 1) * 10, x1, 10):
        X = m + (x - x0) * scale
        strong = x % 50 == 0
        d.line([(X, m), (X, canvas.height)], fill=(255, 255, 255) if strong else (150, 150, 150), width=1)
        if strong:
            d.text((X - 8, 2), str(x), fill=(255, 255, 0))
    for y in range((y0 // 10 + 1) * 10, y1, 10):
        Y = m + (y - y0) * scale
        strong = y % 50 == 0
        d.line([(m, Y), (canvas.width, Y)], fill=(255, 255, 255) if strong else (150, 150, 150), width=1)
        if strong:
            d.text((1, Y - 5), str(y), fill=(255, 255, 0))
    for (f, tid, bx, by, bw, bh, conf) in rows:
        if f != frame:
            continue
        c = COLOURS[tid % len(COLOURS)]
        X0, Y0 = m + (bx - x0) * scale, m + (by - y0) * scale
        X1, Y1 = m + (bx + bw - x0) * scale, m + (by + bh - y0) * scale
        d.rectangle([X0, Y0, X1, Y1], outline=c, width=2)
        d.text((X0 + 2, Y0 - 12), f"{tid}{'' if conf > 0 else ' ign'}", fill=c)
    d.text((m + 4, m + 4), f"frame {frame}", fill=(255, 0, 0))
    return canvas


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("frames_dir")
    ap.add_argument("frames", type=int, nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--crop", default="0,0,768,576")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--stack", action="store_true", help="one image, frames stacked")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--keys")
    g.add_argument("--gt")
    a = ap.parse_args()
    crop = tuple(int(v) for v in a.crop.split(","))
    rows = read_rows(a.keys or a.gt) if (a.keys or a.gt) else []
    os.makedirs(a.out, exist_ok=True)
    canvases = [render(a.frames_dir, fr, crop, a.scale, rows, a.out) for fr in a.frames]
    if a.stack:
        # All frames in one image, one under the other, to compare keyframes.
        w = max(c.width for c in canvases)
        sheet = Image.new("RGB", (w, sum(c.height for c in canvases)), (0, 0, 0))
        y = 0
        for c in canvases:
            sheet.paste(c, (0, y))
            y += c.height
        out = os.path.join(a.out, "s" + "_".join(f"{fr:04d}" for fr in a.frames) + ".png")
        sheet.save(out)
        print(out)
    else:
        for fr, c in zip(a.frames, canvases):
            out = os.path.join(a.out, f"v{fr:04d}.png")
            c.save(out)
            print(out)


if __name__ == "__main__":
    main()
