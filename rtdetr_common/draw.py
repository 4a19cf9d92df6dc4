"""Draw detections (box, class name, score) on an image with Pillow and save a PNG;
``draw_overlay`` draws several sets (e.g. two frameworks' detections) over each other,
one colour per set, with a legend."""
import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def class_colour(label):
    """A bright RGB colour for ``label``; consecutive labels get well-separated hues."""
    hue = (int(label) * GOLDEN_RATIO_CONJUGATE) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def to_pil_image(image):
    """A PIL RGB image from a PIL image, an HWC uint8 array or a CHW float array in [0, 1]."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(np.rint(array * 255), 0, 255)
    array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def label_name(label_names, label):
    """``label_names`` is a dict or a sequence indexed by label; unknown labels show as numbers."""
    if isinstance(label_names, dict):
        return str(label_names.get(label, label))
    if label_names is not None and 0 <= label < len(label_names):
        return str(label_names[label])
    return str(label)


def draw_detections(image, boxes, labels, scores=None, label_names=None, score_threshold=0.0,
                    line_width=None, colour=None, caption_below=False):
    """A copy of ``image`` with xyxy pixel ``boxes`` outlined in their class colour (or
    ``colour`` for all) and tagged "name score" above the box (inside its bottom edge with
    ``caption_below``). ``label_names`` maps label -> name (a dict or a sequence)."""
    canvas = to_pil_image(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if line_width is None:
        line_width = max(1, round(max(canvas.size) / 300))
    painter = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (box, label) in enumerate(zip(boxes, labels)):
        score = None if scores is None else scores[index]
        if score is not None and score < score_threshold:
            continue
        box_colour = colour or class_colour(label)
        x1, y1, x2, y2 = (float(v) for v in box)
        painter.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=box_colour, width=line_width)
        name = label_name(label_names, int(label))
        caption = name if score is None else f"{name} {score:.2f}"
        left, top, right, bottom = painter.textbbox((0, 0), caption, font=font)
        if caption_below:
            text_y = max(y2, y1) - (bottom - top) - 2
        else:
            text_y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        painter.rectangle([x1, text_y, x1 + (right - left) + 2, text_y + (bottom - top) + 2], fill=box_colour)
        painter.text((x1 + 1 - left, text_y + 1 - top), caption, fill=(0, 0, 0), font=font)
    return canvas


def save_detections_png(path, image, boxes, labels, scores=None, label_names=None, score_threshold=0.0):
    """Draw the detections and write the result to ``path`` as PNG; returns the image."""
    drawn = draw_detections(image, boxes, labels, scores, label_names, score_threshold)
    drawn.save(path, format="PNG")
    return drawn


def draw_overlay(image, layers, label_names=None, min_side=0, note=""):
    """``image`` with several detection sets drawn over each other and a legend below.

    ``layers``: ``[(legend text, (r, g, b), boxes, labels, scores), ...]`` drawn in order,
    each thinner than the one before, so a later set lying exactly on an earlier one
    leaves the earlier one's edge visible; the first set's captions sit above its boxes,
    the others' inside their bottom edge. ``min_side``: small images are scaled up (boxes
    too) so the shorter side is at least this; ``note``: a line under the legend."""
    canvas = to_pil_image(image)
    scale = max(1.0, min_side / min(canvas.size)) if min_side else 1.0
    if scale > 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.Resampling.NEAREST)
    widest = max(1, round(max(canvas.size) / 250)) + len(layers) - 1
    for index, (_, colour, boxes, labels, scores) in enumerate(layers):
        canvas = draw_detections(canvas, np.asarray(boxes, np.float64).reshape(-1, 4) * scale, labels, scores,
                                 label_names, line_width=widest - index, colour=colour, caption_below=index > 0)
    font = ImageFont.load_default()
    line_height = 14
    lines = len(layers) + (1 if note else 0)
    out = Image.new("RGB", (canvas.width, canvas.height + line_height * lines + 6), (255, 255, 255))
    out.paste(canvas, (0, 0))
    painter = ImageDraw.Draw(out)
    y = canvas.height + 3
    for text, colour, *_ in layers:
        painter.rectangle([4, y + 2, 16, y + 11], fill=colour)
        painter.text((22, y), text, fill=(0, 0, 0), font=font)
        y += line_height
    if note:
        painter.text((4, y), note, fill=(0, 0, 0), font=font)
    return out
