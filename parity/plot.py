"""Error-by-layer PNG for a parity run, drawn with Pillow alone.

x: tensors in execution order; y: log10 of each tensor's max |ref - test|. A grey
tick per tensor marks the error its tolerance rule allows there (``allowed_abs``),
so a dot above its tick is a failure; failures are drawn as red crosses. Exact
zeros sit on the bottom edge as hollow circles.
"""
import math

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1200, 600
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 30, 50, 80
LOG_FLOOR = -12.0

BACKGROUND = (255, 255, 255)
AXIS = (40, 40, 40)
GRID = (225, 225, 225)
PASS_COLOUR = (31, 119, 180)
FAIL_COLOUR = (214, 39, 40)
TOLERANCE_COLOUR = (140, 140, 140)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _log10(value):
    """log10 of a metric as stored in a report (float or 'inf'/'nan' string), or None."""
    if value is None:
        return None
    number = float(value)
    if math.isnan(number):
        return math.inf
    if number <= 0.0:
        return -math.inf
    return math.log10(number)


def _y_range(points):
    finite = [y for _, y, tolerance, _ in points for y in (y, tolerance)
              if y is not None and math.isfinite(y)]
    low = math.floor(min(finite, default=-8.0)) - 1
    high = math.ceil(max(finite, default=0.0)) + 1
    return max(low, LOG_FLOOR), max(high, max(low, LOG_FLOOR) + 2)


def _points(tensors):
    """(index, log10 max_abs, log10 allowed_abs, passed) for each tensor."""
    points = []
    for index, entry in enumerate(tensors):
        metrics = entry.get("metrics", {})
        points.append((index, _log10(metrics.get("max_abs", 0.0)),
                       _log10(metrics.get("allowed_abs")), bool(entry.get("passed"))))
    return points


def _draw_vertical_label(image, text, font, centre_x, centre_y):
    box = font.getbbox(text)
    label = Image.new("RGBA", (box[2] - box[0] + 4, box[3] - box[1] + 4), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((2 - box[0], 2 - box[1]), text, font=font, fill=AXIS)
    label = label.rotate(90, expand=True)
    image.paste(label, (int(centre_x - label.width / 2), int(centre_y - label.height / 2)), label)


def plot_errors(tensors, path, title="parity: error by layer"):
    """Draw ``tensors`` (report ``tensors`` entries, execution order) to a PNG at ``path``."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    points = _points(tensors)
    y_low, y_high = _y_range(points)
    count = max(len(points), 1)

    def to_x(index):
        return left + (index + 0.5) * (right - left) / count

    def to_y(value):
        value = min(max(value, y_low), y_high)
        return bottom - (value - y_low) * (bottom - top) / (y_high - y_low)

    for decade in range(int(y_low), int(y_high) + 1):
        y = to_y(decade)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 8, y), f"1e{decade}", font=small, fill=AXIS, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=AXIS)

    tick_step = max(1, math.ceil(len(points) / 20))
    for index in range(0, len(points), tick_step):
        x = to_x(index)
        draw.line([(x, bottom), (x, bottom + 4)], fill=AXIS)
        draw.text((x, bottom + 6), str(index), font=small, fill=AXIS, anchor="mt")

    half_width = max(2.0, min(8.0, (right - left) / count / 2.5))
    for index, error, allowed, passed in points:
        x = to_x(index)
        if allowed is not None and math.isfinite(allowed):
            draw.line([(x - half_width, to_y(allowed)), (x + half_width, to_y(allowed))],
                      fill=TOLERANCE_COLOUR, width=2)
        y = to_y(error if error is not None else y_low)
        if not passed:
            draw.line([(x - 4, y - 4), (x + 4, y + 4)], fill=FAIL_COLOUR, width=2)
            draw.line([(x - 4, y + 4), (x + 4, y - 4)], fill=FAIL_COLOUR, width=2)
        elif error is None or error == -math.inf:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=PASS_COLOUR)
        else:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=PASS_COLOUR)

    draw.text((WIDTH / 2, 12), title, font=font, fill=AXIS, anchor="mt")
    draw.text(((left + right) / 2, HEIGHT - 40), "tensor index (execution order)",
              font=font, fill=AXIS, anchor="mt")
    _draw_vertical_label(image, "max |ref - test| (log scale)", font, 22, (top + bottom) / 2)
    failures = [tensors[index].get("name", "?") for index, _, _, passed in points if not passed]
    legend = "dot: pass   red x: fail   grey tick: tolerance   hollow on floor: exactly 0"
    if failures:
        legend += f"   first failure: #{[p[0] for p in points if not p[3]][0]} {failures[0]}"
    draw.text((left, HEIGHT - 18), legend, font=small,
              fill=FAIL_COLOUR if failures else AXIS, anchor="lm")
    image.save(path, format="PNG")
    return path
