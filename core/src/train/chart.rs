//! A PNG chart of a training run: training loss over steps (top panel) and the main
//! evaluation metrics over steps (bottom panel). Drawn by hand on an RGB canvas (2px
//! Bresenham lines, rectangles, an embedded 5x7 bitmap font) and encoded with the
//! pure-Rust `png` crate, so charts need no system libraries or fonts.

use std::io::BufWriter;
use std::path::Path;

use super::StepLog;
use crate::error::{Error, Result};

/// Chart width in pixels.
pub const WIDTH: usize = 900;
/// Chart height in pixels (two stacked panels of half this height).
pub const HEIGHT: usize = 600;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
/// Colour of the training-loss line; used nowhere else in the chart.
pub const LOSS_COLOR: Rgb = [31, 119, 180];
/// Colours of the evaluation series, in legend order.
pub const EVAL_COLORS: [Rgb; 4] = [
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
];

/// Eval keys plotted when present, in order (IR evaluator first, then triplet/margin).
const PREFERRED_KEYS: [&str; 5] = [
    "cosine_ndcg@10",
    "cosine_mrr@10",
    "cosine_accuracy@1",
    "cosine_accuracy",
    "combined_margin",
];

/// Renders `logs` to a `WIDTH` x `HEIGHT` PNG at `path`, written atomically (a temporary
/// file beside `path`, then a rename). Points whose value is NaN or infinite are skipped;
/// empty logs give two empty panels.
pub fn write_chart(logs: &[StepLog], path: &Path) -> Result<()> {
    let canvas = render(logs);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chart.png".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let encode = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let file = std::fs::File::create(&tmp)?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&canvas.pixels)?;
        writer.finish()?;
        Ok(())
    };
    if let Err(e) = encode() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// One named polyline.
struct Series {
    name: String,
    color: Rgb,
    points: Vec<(f64, f64)>,
}

fn render(logs: &[StepLog]) -> Canvas {
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let loss = Series {
        name: "loss".into(),
        color: LOSS_COLOR,
        points: logs
            .iter()
            .filter_map(|l| l.loss.map(|v| (l.step as f64, v)))
            .collect(),
    };
    let eval = eval_series(logs);
    // Both panels share the step axis so that points line up vertically.
    let x_range = padded_range(logs.iter().map(|l| l.step as f64));
    let half = HEIGHT / 2;
    draw_panel(&mut canvas, 0, "TRAINING LOSS", x_range, &[loss], false);
    draw_panel(&mut canvas, half, "EVALUATION", x_range, &eval, true);
    canvas
}

/// Picks at most four eval keys: the preferred ones that occur, else the first keys seen.
fn eval_series(logs: &[StepLog]) -> Vec<Series> {
    let present: std::collections::BTreeSet<&str> = logs
        .iter()
        .filter_map(|l| l.eval.as_ref())
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    let mut keys: Vec<&str> = PREFERRED_KEYS
        .iter()
        .copied()
        .filter(|k| present.contains(k))
        .collect();
    if keys.is_empty() {
        keys = present.iter().copied().collect();
    }
    keys.truncate(EVAL_COLORS.len());
    keys.iter()
        .zip(EVAL_COLORS)
        .map(|(key, color)| Series {
            name: key.to_string(),
            color,
            points: logs
                .iter()
                .filter_map(|l| {
                    l.eval
                        .as_ref()
                        .and_then(|m| m.get(*key))
                        .map(|v| (l.step as f64, *v))
                })
                .collect(),
        })
        .collect()
}

/// (min, max) of the finite values, padded so that it is never empty or degenerate.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * lo.abs().max(1.0) {
        let pad = if lo == 0.0 { 0.5 } else { lo.abs() * 0.05 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// About five round tick values inside `[lo, hi]`, and the decimals they need.
fn ticks(lo: f64, hi: f64, integer: bool) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    if integer {
        step = step.max(1.0).round();
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
    .min(8);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let values = (first..=last.min(first + 20))
        .map(|i| i as f64 * step)
        .collect();
    (values, decimals)
}

fn format_tick(v: f64, decimals: usize) -> String {
    if v.abs() >= 1e6 {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.decimals$}");
    if s.starts_with("-") && s.trim_start_matches(['-', '0', '.']).is_empty() {
        s[1..].to_string() // no "-0.00"
    } else {
        s
    }
}

const LEFT: usize = 80;
const RIGHT: usize = 20;
const TOP: usize = 34;
const BOTTOM: usize = 36;
/// Series with more points than this are drawn without point markers.
const MAX_MARKERS: usize = 40;

/// Draws one panel occupying rows `y0..y0 + HEIGHT / 2`.
fn draw_panel(
    c: &mut Canvas,
    y0: usize,
    title: &str,
    x_range: (f64, f64),
    series: &[Series],
    legend: bool,
) {
    let (left, right) = (LEFT as i64, (WIDTH - RIGHT) as i64);
    let (top, bottom) = ((y0 + TOP) as i64, (y0 + HEIGHT / 2 - BOTTOM) as i64);
    let y_range = padded_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let to_px = |(x, y): (f64, f64)| -> (i64, i64) {
        let fx = (x - x_range.0) / (x_range.1 - x_range.0);
        let fy = (y - y_range.0) / (y_range.1 - y_range.0);
        (
            left + (fx * (right - left) as f64).round() as i64,
            bottom - (fy * (bottom - top) as f64).round() as i64,
        )
    };

    let title_w = text_width(title, 2);
    c.text((WIDTH as i64 - title_w) / 2, y0 as i64 + 8, title, 2, BLACK);

    let (xt, xd) = ticks(x_range.0, x_range.1, true);
    for v in xt {
        let (px, _) = to_px((v, y_range.0));
        c.fill_rect(px, top, 1, bottom - top, GRID);
        c.fill_rect(px, bottom, 1, 5, BLACK);
        let label = format_tick(v, xd);
        c.text(px - text_width(&label, 1) / 2, bottom + 8, &label, 1, BLACK);
    }
    let (yt, yd) = ticks(y_range.0, y_range.1, false);
    for v in yt {
        let (_, py) = to_px((x_range.0, v));
        c.fill_rect(left, py, right - left, 1, GRID);
        c.fill_rect(left - 5, py, 5, 1, BLACK);
        let label = format_tick(v, yd);
        c.text(left - 8 - text_width(&label, 1), py - 3, &label, 1, BLACK);
    }
    c.text(
        (left + right - text_width("STEP", 1)) / 2,
        bottom + 22,
        "STEP",
        1,
        BLACK,
    );
    // Axes on top of the grid.
    c.fill_rect(left, top, 1, bottom - top + 1, BLACK);
    c.fill_rect(left, bottom, right - left + 1, 1, BLACK);

    for s in series {
        let mut finite: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        finite.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pts: Vec<(i64, i64)> = finite.into_iter().map(to_px).collect();
        for w in pts.windows(2) {
            c.line(w[0], w[1], s.color);
        }
        // Markers only where points are sparse (eval steps); a dense loss curve stays a line.
        if pts.len() <= MAX_MARKERS {
            for &(px, py) in &pts {
                c.fill_rect(px - 2, py - 2, 5, 5, s.color);
            }
        }
    }

    if legend && !series.is_empty() {
        let box_w = series
            .iter()
            .map(|s| text_width(&s.name, 1))
            .max()
            .unwrap_or(0)
            + 34;
        let box_h = series.len() as i64 * 14 + 8;
        // The corner of the plot whose box covers the fewest drawn series pixels.
        let colors: Vec<Rgb> = series.iter().map(|s| s.color).collect();
        let corners = [
            (right - box_w - 8, top + 8),
            (left + 8, top + 8),
            (right - box_w - 8, bottom - box_h - 8),
            (left + 8, bottom - box_h - 8),
        ];
        let (bx, by) = corners
            .into_iter()
            .min_by_key(|&(x, y)| c.count_in(x, y, box_w, box_h, &colors))
            .expect("four corners");
        c.fill_rect(bx, by, box_w, box_h, WHITE);
        c.stroke_rect(bx, by, box_w, box_h, BLACK);
        for (i, s) in series.iter().enumerate() {
            let ly = by + 6 + i as i64 * 14;
            c.fill_rect(bx + 6, ly + 2, 16, 3, s.color);
            c.text(bx + 28, ly, &s.name, 1, BLACK);
        }
    }
}

/// An RGB8 image, row-major.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Sets one pixel; points outside the canvas are ignored.
    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, color);
            }
        }
    }

    /// Pixels inside the rectangle that have one of `colors`.
    fn count_in(&self, x: i64, y: i64, w: i64, h: i64, colors: &[Rgb]) -> usize {
        let mut n = 0;
        for yy in y.max(0)..(y + h).min(self.height as i64) {
            for xx in x.max(0)..(x + w).min(self.width as i64) {
                let i = (yy as usize * self.width + xx as usize) * 3;
                n += colors.iter().any(|c| self.pixels[i..i + 3] == c[..]) as usize;
            }
        }
        n
    }

    fn stroke_rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        self.fill_rect(x, y, w, 1, color);
        self.fill_rect(x, y + h - 1, w, 1, color);
        self.fill_rect(x, y, 1, h, color);
        self.fill_rect(x + w - 1, y, 1, h, color);
    }

    /// A 2px-wide line (Bresenham with a 2x2 pen).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.fill_rect(x, y, 2, 2, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y); lower case renders as upper case.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            let gx = x + i as i64 * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.fill_rect(gx + col * scale, y + r as i64 * scale, scale, scale, color);
                    }
                }
            }
        }
    }
}

fn text_width(text: &str, scale: i64) -> i64 {
    (text.chars().count() as i64 * 6 - 1).max(0) * scale
}

/// 5x7 glyphs: seven rows, bit 4 is the leftmost column.
const FONT: &[(char, [u8; 7])] = &[
    ('0', [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E]),
    ('1', [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E]),
    ('2', [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F]),
    ('3', [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E]),
    ('4', [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02]),
    ('5', [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E]),
    ('6', [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E]),
    ('7', [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08]),
    ('8', [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E]),
    ('9', [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C]),
    ('A', [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11]),
    ('B', [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E]),
    ('C', [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E]),
    ('D', [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C]),
    ('E', [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F]),
    ('F', [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10]),
    ('G', [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F]),
    ('H', [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11]),
    ('I', [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E]),
    ('J', [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C]),
    ('K', [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11]),
    ('L', [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F]),
    ('M', [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11]),
    ('N', [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11]),
    ('O', [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E]),
    ('P', [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10]),
    ('Q', [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D]),
    ('R', [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11]),
    ('S', [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E]),
    ('T', [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04]),
    ('U', [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E]),
    ('V', [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04]),
    ('W', [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A]),
    ('X', [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11]),
    ('Y', [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04]),
    ('Z', [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F]),
    ('.', [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C]),
    ('-', [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00]),
    ('+', [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00]),
    ('_', [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F]),
    (':', [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00]),
    ('%', [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03]),
    ('@', [0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0F]),
    ('/', [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00]),
    ('(', [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02]),
    (')', [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08]),
];

/// The glyph of `ch` (upper-cased); blank for a space or a character the font lacks.
fn glyph(ch: char) -> [u8; 7] {
    let up = ch.to_ascii_uppercase();
    FONT.iter()
        .find(|(c, _)| *c == up)
        .map(|(_, g)| *g)
        .unwrap_or([0; 7])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluators::Metrics;

    fn log(step: usize, loss: Option<f64>, eval: Option<&[(&str, f64)]>) -> StepLog {
        StepLog {
            step,
            loss,
            lr: 5e-5,
            grad_norm: 1.0,
            examples_per_s: 100.0,
            eval: eval.map(|kv| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<Metrics>()
            }),
        }
    }

    /// Writes the chart and returns the decoded RGB pixels after checking the header.
    fn roundtrip(logs: &[StepLog]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        write_chart(logs, &path).unwrap();
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width as usize, info.height as usize), (WIDTH, HEIGHT));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left behind"
        );
        buf.truncate(info.buffer_size());
        buf
    }

    fn count(pixels: &[u8], color: Rgb) -> usize {
        pixels.chunks_exact(3).filter(|p| *p == color).count()
    }

    #[test]
    fn draws_loss_and_eval_lines() {
        let ir = |x: f64| {
            [
                ("cosine_ndcg@10", 0.5 + x),
                ("cosine_mrr@10", 0.4 + x),
                ("cosine_accuracy@1", 0.3 + x),
            ]
        };
        let mut logs = vec![log(0, None, Some(&ir(0.0)))];
        logs.extend((1..=50).map(|s| log(s * 10, Some(2.0 / s as f64), None)));
        logs.push(log(250, Some(0.01), Some(&ir(0.2))));
        logs.push(log(500, Some(0.005), Some(&ir(0.3))));
        let px = roundtrip(&logs);
        assert!(count(&px, LOSS_COLOR) > 500);
        for color in &EVAL_COLORS[..3] {
            assert!(count(&px, *color) > 50);
        }
        assert_eq!(count(&px, EVAL_COLORS[3]), 0);
    }

    #[test]
    fn no_losses_no_loss_pixels() {
        assert_eq!(count(&roundtrip(&[]), LOSS_COLOR), 0);
        let eval_only = [
            log(0, None, Some(&[("cosine_accuracy", 0.7)])),
            log(5, None, Some(&[("cosine_accuracy", 0.9)])),
        ];
        let px = roundtrip(&eval_only);
        assert_eq!(count(&px, LOSS_COLOR), 0);
        assert!(count(&px, EVAL_COLORS[0]) > 0);
    }

    #[test]
    fn nan_single_point_and_flat_values_do_not_panic() {
        let px = roundtrip(&[log(
            3,
            Some(f64::NAN),
            Some(&[("combined_margin", f64::NAN)]),
        )]);
        assert_eq!(count(&px, LOSS_COLOR), 0);
        let px = roundtrip(&[log(3, Some(0.5), None)]);
        assert!(
            count(&px, LOSS_COLOR) > 0,
            "a single point still shows as a marker"
        );
        let flat: Vec<StepLog> = (0..5)
            .map(|s| log(s, Some(1.0), Some(&[("cosine_ndcg@10", 0.0)])))
            .collect();
        assert!(count(&roundtrip(&flat), LOSS_COLOR) > 0);
        let mixed = [
            log(1, Some(1.0), None),
            log(2, Some(f64::INFINITY), None),
            log(3, Some(0.5), None),
        ];
        assert!(count(&roundtrip(&mixed), LOSS_COLOR) > 0);
    }

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let (t, d) = ticks(0.0, 1.0, false);
        let labels: Vec<String> = t.iter().map(|v| format_tick(*v, d)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let (t, d) = ticks(-0.4, 3.2, true);
        assert_eq!((t, d), (vec![0.0, 1.0, 2.0, 3.0], 0));
        assert_eq!(format_tick(-0.0001, 2), "0.00");
    }
}
