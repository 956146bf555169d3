//! The confusion matrix as a PNG heat map, drawn pixel by pixel with the bitmap [`font`].
//!
//! Layout: true classes down the left (row labels), predicted classes along the top (labels
//! written upwards), one square cell per pair with its count in the middle. A cell's shade is
//! its share of the row (the recall of the diagonal cell, the confusion rate of the others), from
//! near-white at 0 to dark blue at 1, so a class with few records reads as clearly as a large
//! one; an empty row stays white. Counts are white on dark cells and black on light ones.
//!
//! The image is a pure function of the matrix and the names: the same input gives the same bytes.

pub mod font;

use image::codecs::png::PngEncoder;
use image::{ImageEncoder, Rgb, RgbImage};

use super::MetricsError;
use font::{GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, glyph};

/// Screen pixels per font pixel.
const TEXT_SCALE: u32 = 2;
/// Screen pixels from one character to the next.
const CHAR_ADVANCE: u32 = GLYPH_ADVANCE * TEXT_SCALE;
/// Screen pixels down a line of text.
const TEXT_HEIGHT: u32 = GLYPH_HEIGHT * TEXT_SCALE;
/// Screen pixels down a capital letter or a digit (the line less its descender): what is
/// centred in a cell.
const CAP_HEIGHT: u32 = (GLYPH_HEIGHT - 1) * TEXT_SCALE;
/// Space around the image and between its parts.
const PADDING: u32 = 8;
/// A cell is at least this wide, more when its count needs it.
const MIN_CELL: u32 = 40;
/// Longer class names are cut, ending in `..`.
const MAX_LABEL_CHARS: usize = 16;
/// A larger image is refused rather than allocated (about 200 MB of RGB).
const MAX_PIXELS: u64 = 64 << 20;

const ROW_AXIS_TITLE: &str = "true";
const COLUMN_AXIS_TITLE: &str = "predicted";

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([32, 32, 32]);
const GRID: Rgb<u8> = Rgb([190, 190, 190]);
/// The shade of a cell with none of its row, and with all of it.
const EMPTY_CELL: [f64; 3] = [247.0, 251.0, 255.0];
const FULL_CELL: [f64; 3] = [8.0, 48.0, 107.0];
/// From this share on, a count is written in white.
const LIGHT_TEXT_FROM: f64 = 0.5;

/// The PNG of `matrix` (`matrix[true][predicted]`, square, one row per class name).
pub fn confusion_matrix_png(
    matrix: &[Vec<u64>],
    class_names: &[String],
) -> Result<Vec<u8>, MetricsError> {
    let image = draw(matrix, class_names)?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| MetricsError::Plot {
            message: e.to_string(),
        })?;
    Ok(png)
}

/// Where everything goes; all in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    cell: u32,
    /// The top-left corner of the grid of cells.
    grid_x: u32,
    grid_y: u32,
    width: u32,
    height: u32,
}

impl Layout {
    fn new(classes: usize, longest_label: usize, largest_count: u64) -> Layout {
        let classes = classes as u32;
        let label_length = text_width(longest_label);
        let count_length = text_width(largest_count.to_string().len());
        let cell = MIN_CELL.max(count_length + 2 * PADDING);
        let grid = classes * cell;
        // Left: the row axis title (written upwards), the row labels, the grid.
        let grid_x = PADDING + TEXT_HEIGHT + PADDING + label_length + PADDING;
        // Top: the column axis title, the column labels (written upwards), the grid.
        let grid_y = PADDING + TEXT_HEIGHT + PADDING + label_length + PADDING;
        let width = (grid_x + grid).max(grid_x + text_width(COLUMN_AXIS_TITLE.len())) + PADDING;
        let height = (grid_y + grid).max(grid_y + text_width(ROW_AXIS_TITLE.len())) + PADDING;
        Layout {
            cell,
            grid_x,
            grid_y,
            width,
            height,
        }
    }
}

fn draw(matrix: &[Vec<u64>], class_names: &[String]) -> Result<RgbImage, MetricsError> {
    let classes = matrix.len();
    if class_names.len() != classes || matrix.iter().any(|row| row.len() != classes) {
        return Err(MetricsError::Plot {
            message: format!(
                "expected a square matrix with one row per class name ({} names, {} rows)",
                class_names.len(),
                classes
            ),
        });
    }
    let labels: Vec<String> = class_names.iter().map(|n| shorten(n)).collect();
    let longest_label = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let largest_count = matrix.iter().flatten().copied().max().unwrap_or(0);
    let layout = Layout::new(classes, longest_label, largest_count);
    if u64::from(layout.width) * u64::from(layout.height) > MAX_PIXELS {
        return Err(MetricsError::Plot {
            message: format!(
                "{classes} classes make a {}x{} image, more than {MAX_PIXELS} pixels",
                layout.width, layout.height
            ),
        });
    }

    let mut image = RgbImage::from_pixel(layout.width, layout.height, BACKGROUND);
    let Layout {
        cell,
        grid_x,
        grid_y,
        ..
    } = layout;
    let grid = classes as u32 * cell;
    // The axis titles, centred on the grid (which is at least as long as each, see Layout).
    let row_title = text_width(ROW_AXIS_TITLE.len());
    let column_title = text_width(COLUMN_AXIS_TITLE.len());
    draw_text(
        &mut image,
        ROW_AXIS_TITLE,
        (PADDING, grid_y + (grid.max(row_title) + row_title) / 2),
        Direction::Up,
        INK,
    );
    draw_text(
        &mut image,
        COLUMN_AXIS_TITLE,
        (
            grid_x + (grid.max(column_title) - column_title) / 2,
            PADDING,
        ),
        Direction::Right,
        INK,
    );

    for (t, row) in matrix.iter().enumerate() {
        let row_total: u64 = row.iter().sum();
        let top = grid_y + t as u32 * cell;
        let label = &labels[t];
        let label_x = grid_x - PADDING - text_width(label.chars().count());
        let text_y = top + (cell - CAP_HEIGHT) / 2;
        draw_text(&mut image, label, (label_x, text_y), Direction::Right, INK);

        for (p, &count) in row.iter().enumerate() {
            let left = grid_x + p as u32 * cell;
            let share = if row_total == 0 {
                0.0
            } else {
                count as f64 / row_total as f64
            };
            fill(&mut image, (left, top), (cell, cell), shade(share));
            let text = count.to_string();
            let text_x = left + (cell - text_width(text.len())) / 2;
            let ink = if share >= LIGHT_TEXT_FROM {
                BACKGROUND
            } else {
                INK
            };
            draw_text(&mut image, &text, (text_x, text_y), Direction::Right, ink);
        }
    }

    for (p, label) in labels.iter().enumerate() {
        // Written upwards from just above the grid, centred on the column.
        let x = grid_x + p as u32 * cell + (cell - CAP_HEIGHT) / 2;
        draw_text(&mut image, label, (x, grid_y - PADDING), Direction::Up, INK);
    }

    for i in 0..=classes as u32 {
        fill(&mut image, (grid_x + i * cell, grid_y), (1, grid + 1), GRID);
        fill(&mut image, (grid_x, grid_y + i * cell), (grid + 1, 1), GRID);
    }
    Ok(image)
}

/// The colour of a cell holding `share` of its row.
fn shade(share: f64) -> Rgb<u8> {
    let share = share.clamp(0.0, 1.0);
    let mix = |c: usize| (EMPTY_CELL[c] + (FULL_CELL[c] - EMPTY_CELL[c]) * share).round() as u8;
    Rgb([mix(0), mix(1), mix(2)])
}

fn shorten(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL_CHARS {
        name.to_string()
    } else {
        let mut short: String = name.chars().take(MAX_LABEL_CHARS - 2).collect();
        short.push_str("..");
        short
    }
}

/// Pixels across `chars` characters, without the blank after the last.
fn text_width(chars: usize) -> u32 {
    (chars as u32 * CHAR_ADVANCE).saturating_sub(CHAR_ADVANCE - GLYPH_WIDTH * TEXT_SCALE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Left to right; `at` is the top-left corner.
    Right,
    /// Bottom to top, the tops of the letters facing left; `at` is the bottom-left corner.
    Up,
}

fn draw_text(image: &mut RgbImage, text: &str, at: (u32, u32), direction: Direction, ink: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for (gy, bits) in (0u32..).zip(rows) {
            for gx in 0..GLYPH_WIDTH {
                if bits & (1 << (GLYPH_WIDTH - 1 - gx)) == 0 {
                    continue;
                }
                // Position along the text and down from its top, in screen pixels.
                let along = i as u32 * CHAR_ADVANCE + gx * TEXT_SCALE;
                let down = gy * TEXT_SCALE;
                let corner = match direction {
                    Direction::Right => (at.0 + along, at.1 + down),
                    Direction::Up => (at.0 + down, at.1.saturating_sub(along + TEXT_SCALE - 1)),
                };
                fill(image, corner, (TEXT_SCALE, TEXT_SCALE), ink);
            }
        }
    }
}

/// Paints a rectangle, clipped to the image.
fn fill(image: &mut RgbImage, at: (u32, u32), size: (u32, u32), color: Rgb<u8>) {
    for y in at.1..at.1.saturating_add(size.1).min(image.height()) {
        for x in at.0..at.0.saturating_add(size.0).min(image.width()) {
            image.put_pixel(x, y, color);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn decode(png: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8()
    }

    #[test]
    fn decodes_as_a_png_of_the_laid_out_size() {
        let matrix = vec![vec![5, 1, 0], vec![2, 7, 1], vec![0, 0, 9]];
        let png = confusion_matrix_png(&matrix, &names(&["cat", "dog", "T-shirt/top"])).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let image = decode(&png);
        // Labels: 11 characters of 12 pixels less the last blank; counts are one digit, so
        // cells are MIN_CELL wide.
        let label = 11 * 12 - 2;
        let side = 8 + 16 + 8 + label + 8;
        assert_eq!(image.dimensions(), (side + 3 * 40 + 8, side + 3 * 40 + 8));
    }

    #[test]
    fn cells_are_shaded_by_their_share_of_the_row() {
        // Row 0 is all on the diagonal, row 1 split evenly, row 2 empty.
        let matrix = vec![vec![3, 0, 0], vec![0, 50, 50], vec![0, 0, 0]];
        let image = decode(&confusion_matrix_png(&matrix, &names(&["a", "b", "c"])).unwrap());
        let layout = Layout::new(3, 1, 50);
        // A corner pixel of each cell, clear of the grid lines and the count.
        let at = |t: u32, p: u32| {
            *image.get_pixel(
                layout.grid_x + p * layout.cell + 2,
                layout.grid_y + t * layout.cell + 2,
            )
        };
        assert_eq!(at(0, 0), shade(1.0));
        assert_eq!(at(0, 1), shade(0.0));
        assert_eq!(at(1, 1), shade(0.5));
        assert_eq!(at(1, 2), shade(0.5));
        assert_eq!(at(2, 2), shade(0.0));
        // Darker means lower values here.
        assert!(shade(1.0).0[0] < shade(0.5).0[0] && shade(0.5).0[0] < shade(0.0).0[0]);
    }

    #[test]
    fn different_matrices_give_different_images_and_equal_ones_equal_bytes() {
        let classes = names(&["a", "b"]);
        let one = confusion_matrix_png(&[vec![4, 1], vec![0, 5]], &classes).unwrap();
        let same = confusion_matrix_png(&[vec![4, 1], vec![0, 5]], &classes).unwrap();
        // Same shares of each row, other counts: only the digits differ.
        let other_counts = confusion_matrix_png(&[vec![8, 2], vec![0, 5]], &classes).unwrap();
        let other_names = confusion_matrix_png(&[vec![4, 1], vec![0, 5]], &names(&["a", "c"]));
        assert_eq!(one, same);
        assert_ne!(decode(&one), decode(&other_counts));
        assert_ne!(decode(&one), decode(&other_names.unwrap()));
    }

    #[test]
    fn large_counts_widen_the_cells_and_long_names_are_cut() {
        let small = Layout::new(2, 1, 9);
        let large = Layout::new(2, 1, 1_234_567);
        assert_eq!(small.cell, MIN_CELL);
        assert_eq!(large.cell, text_width(7) + 2 * PADDING);
        assert_eq!(shorten("a-very-long-class-name"), "a-very-long-cl..");
        assert_eq!(shorten("short"), "short");
    }

    #[test]
    fn refuses_a_matrix_that_does_not_match_the_names() {
        let err = confusion_matrix_png(&[vec![1, 0], vec![0, 1]], &names(&["a"])).unwrap_err();
        assert_eq!(err.reason(), "PlotError");
        let err = confusion_matrix_png(&[vec![1, 0], vec![0]], &names(&["a", "b"])).unwrap_err();
        assert_eq!(err.reason(), "PlotError");
    }
}
