//! The report's charts, each drawn by `plotters` into an SVG string.
//!
//! Labels come from attackers (paths, ASN names): they are shortened here and escaped by the
//! SVG backend, which writes every text as character data.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Location;
use super::world::Ring;

/// Width of the full-width charts, pixels.
const WIDE: u32 = 1000;
/// Width of the half-width charts.
const HALF: u32 = 500;
/// The bar colour.
const BAR: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
/// The colour of map dots.
const DOT: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
/// Longest label shown in full.
const LABEL_CHARS: usize = 34;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Runs `draw` on a blank SVG canvas and returns the document.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<(), String>) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A label cut to [`LABEL_CHARS`] characters.
fn short(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(LABEL_CHARS - 1).collect();
        format!("{cut}…")
    }
}

/// A placeholder for a chart without data.
fn empty(root: &Area, title: &str) -> Result<(), String> {
    root.titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?
        .draw_text(
            "no requests in this period",
            &("sans-serif", 14)
                .into_text_style(root)
                .color(&BLACK.mix(0.5)),
            (20, 20),
        )
        .map_err(|e| e.to_string())
}

/// Hour number (hours since the epoch) of a `YYYY-MM-DDTHH` label.
fn hour_number(label: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339(&format!("{label}:00:00Z")).ok()?;
    let secs = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some((secs / 3600) as i64)
}

/// Requests per hour as an area chart; hours without requests are drawn as zero.
pub fn activity(hourly: &[(String, u64)]) -> Result<String, String> {
    let title = "Requests per hour (UTC)";
    let points: Vec<(i64, u64)> = hourly
        .iter()
        .filter_map(|(label, n)| Some((hour_number(label)?, *n)))
        .collect();
    svg((WIDE, 300), |root| {
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return empty(root, title);
        };
        let (start, end) = (first.0, last.0.max(first.0 + 1));
        let top = points.iter().map(|p| p.1).max().unwrap_or(1).max(1);
        let mut filled = vec![0u64; (end - start + 1) as usize];
        for (hour, n) in &points {
            filled[(hour - start) as usize] = *n;
        }
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(60)
            .build_cartesian_2d(start..end, 0u64..top + top / 10 + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(8)
            .x_label_formatter(&|hour| {
                let time =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(*hour as u64 * 3600);
                let text = humantime::format_rfc3339_seconds(time).to_string();
                format!("{} {}h", &text[5..10], &text[11..13])
            })
            .y_desc("requests")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                AreaSeries::new(
                    filled
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (start + i as i64, *n)),
                    0,
                    BAR.mix(0.25),
                )
                .border_style(BAR),
            )
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// A horizontal bar chart of a top table, the largest at the top.
pub fn bars(title: &str, rows: &[(String, u64)]) -> Result<String, String> {
    // Room for three bars at least: fewer would squeeze the labels out of a short chart.
    let height = 60 + 26 * rows.len().max(3) as u32;
    svg((HALF, height), |root| {
        if rows.is_empty() {
            return empty(root, title);
        }
        let top = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
        let n = rows.len();
        let labels: Vec<String> = rows.iter().map(|(label, _)| short(label)).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(210)
            .build_cartesian_2d(0u64..top + top / 8 + 1, (0..n).into_segmented())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(n)
            .y_label_formatter(&|value| match value {
                SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - i].clone(),
                _ => String::new(),
            })
            .x_labels(5)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, count))| {
                let slot = n - 1 - i;
                let mut bar = Rectangle::new(
                    [
                        (0, SegmentValue::Exact(slot)),
                        (*count, SegmentValue::Exact(slot + 1)),
                    ],
                    BAR.filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                bar
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// A vertical bar chart of labelled counts in the given order (the duration histogram).
pub fn columns(title: &str, buckets: &[(&str, u64)]) -> Result<String, String> {
    svg((WIDE, 300), |root| {
        if buckets.iter().all(|b| b.1 == 0) {
            return empty(root, title);
        }
        let top = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
        let n = buckets.len();
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), 0u64..top + top / 10 + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(n)
            .x_label_formatter(&|value| match value {
                SegmentValue::CenterOf(i) if *i < n => buckets[*i].0.to_owned(),
                _ => String::new(),
            })
            .y_desc("requests")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(buckets.iter().enumerate().map(|(i, (_, count))| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0),
                        (SegmentValue::Exact(i + 1), *count),
                    ],
                    BAR.filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// The land outline with a dot per source location; a dot's area grows with its requests.
pub fn world_map(land: &[Ring], locations: &[Location]) -> Result<String, String> {
    // Equirectangular, cropped to 60°S-85°N (nothing scans from Antarctica).
    let (width, height) = (WIDE, 405);
    svg((width, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(4)
            .build_cartesian_2d(-180f64..180f64, -60f64..85f64)
            .map_err(|e| e.to_string())?;
        // Rings that cross the antimeridian are drawn twice, a world apart, and the canvas
        // edge cuts each copy: drawn once they would streak across the whole map.
        let land_colour = RGBColor(0xdd, 0xdd, 0xdd).filled();
        for ring in land.iter().filter(|r| r.iter().any(|p| p.1 > -58.0)) {
            let unwrapped = unwrap_longitudes(ring);
            let (west, east) = unwrapped
                .iter()
                .fold((f64::MAX, f64::MIN), |(w, e), p| (w.min(p.0), e.max(p.0)));
            for shift in [-360.0, 0.0, 360.0] {
                if west + shift < 180.0 && east + shift > -180.0 {
                    let copy: Vec<(f64, f64)> = unwrapped
                        .iter()
                        .map(|&(lon, lat)| (lon + shift, lat))
                        .collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(copy, land_colour)))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        let busiest = locations
            .iter()
            .map(|l| l.requests)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        chart
            .draw_series(locations.iter().rev().map(|l| {
                let radius = 2.0 + 10.0 * (l.requests as f64 / busiest).sqrt();
                Circle::new(
                    (l.longitude, l.latitude),
                    radius.round() as i32,
                    DOT.mix(0.55).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// The ring with longitudes made continuous (a step of more than 180° is a crossing of the
/// antimeridian, not a trip around the world).
fn unwrap_longitudes(ring: &Ring) -> Ring {
    let mut offset = 0.0;
    let mut previous: Option<f64> = None;
    ring.iter()
        .map(|&(lon, lat)| {
            if let Some(prev) = previous {
                if lon - prev > 180.0 {
                    offset -= 360.0;
                } else if prev - lon > 180.0 {
                    offset += 360.0;
                }
            }
            previous = Some(lon);
            (lon + offset, lat)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_shortened_and_escaped() {
        let rows = vec![
            ("<script>alert(1)</script>".to_owned(), 5),
            ("/".repeat(80), 3),
        ];
        let svg = bars("Top paths", &rows).unwrap();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains(&format!("{}…", "/".repeat(LABEL_CHARS - 1))));
        assert!(!svg.contains(&"/".repeat(LABEL_CHARS + 1)));
    }

    #[test]
    fn empty_charts_say_so() {
        assert!(
            bars("Top ports", &[])
                .unwrap()
                .contains("no requests in this period")
        );
        assert!(
            activity(&[])
                .unwrap()
                .contains("no requests in this period")
        );
        assert!(
            columns("Held", &[("< 1 s", 0)])
                .unwrap()
                .contains("no requests")
        );
    }

    #[test]
    fn activity_fills_quiet_hours_and_maps_draw_every_dot() {
        let hourly = vec![
            ("2026-11-20T10".to_owned(), 4),
            ("2026-11-20T13".to_owned(), 9),
        ];
        assert_eq!(
            hour_number("2026-11-20T13").unwrap() - hour_number("2026-11-20T10").unwrap(),
            3
        );
        let svg = activity(&hourly).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polygon"), "{svg}");
        let locations = vec![
            Location {
                latitude: 48.9,
                longitude: 2.4,
                requests: 10,
            },
            Location {
                latitude: -33.9,
                longitude: 151.2,
                requests: 1,
            },
        ];
        let map = world_map(&crate::analysis::report::world::land_rings(), &locations).unwrap();
        assert_eq!(map.matches("<circle").count(), 2);
        assert!(map.matches("<polygon").count() > 100);
        let crossing = vec![(179.0, 65.0), (-179.0, 66.0), (-178.0, 64.0), (179.0, 65.0)];
        assert_eq!(
            unwrap_longitudes(&crossing),
            vec![(179.0, 65.0), (181.0, 66.0), (182.0, 64.0), (179.0, 65.0)]
        );
    }
}
