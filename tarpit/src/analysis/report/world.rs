//! The world's land outline for the report's map, decoded from the embedded TopoJSON file
//! (`assets/land-110m.json`, Natural Earth 1:110m; see `assets/README.md`).
//!
//! Why TopoJSON: it is the compact form the outline is published in (55 KB), and decoding it
//! is a few lines: arcs are delta-encoded integer points, and each polygon ring is a chain of
//! arcs, a negative index meaning the arc reversed.

use serde::Deserialize;

/// The embedded outline.
const LAND_110M: &str = include_str!("../../../assets/land-110m.json");

#[derive(Deserialize)]
struct Topology {
    objects: Objects,
    arcs: Vec<Vec<[i64; 2]>>,
    transform: Transform,
}

#[derive(Deserialize)]
struct Objects {
    land: GeometryCollection,
}

#[derive(Deserialize)]
struct GeometryCollection {
    geometries: Vec<Geometry>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Geometry {
    Polygon { arcs: Vec<Vec<i64>> },
    MultiPolygon { arcs: Vec<Vec<Vec<i64>>> },
}

#[derive(Deserialize)]
struct Transform {
    scale: [f64; 2],
    translate: [f64; 2],
}

/// A closed ring of (longitude, latitude) points.
pub type Ring = Vec<(f64, f64)>;

/// The outer rings of every land polygon (holes are lakes; the map leaves them filled).
pub fn land_rings() -> Vec<Ring> {
    let topology: Topology =
        serde_json::from_str(LAND_110M).expect("the embedded land outline is valid TopoJSON");
    let arcs: Vec<Ring> = topology
        .arcs
        .iter()
        .map(|arc| {
            let (mut x, mut y) = (0i64, 0i64);
            arc.iter()
                .map(|[dx, dy]| {
                    x += dx;
                    y += dy;
                    let t = &topology.transform;
                    (
                        x as f64 * t.scale[0] + t.translate[0],
                        y as f64 * t.scale[1] + t.translate[1],
                    )
                })
                .collect()
        })
        .collect();
    let ring = |indexes: &Vec<i64>| -> Ring {
        let mut points = Ring::new();
        for &index in indexes {
            let (arc, reversed) = if index < 0 {
                (&arcs[!index as usize], true)
            } else {
                (&arcs[index as usize], false)
            };
            let mut part: Ring = arc.clone();
            if reversed {
                part.reverse();
            }
            // Consecutive arcs share their joining point.
            let skip = usize::from(!points.is_empty());
            points.extend(part.into_iter().skip(skip));
        }
        points
    };
    let mut rings = Vec::new();
    for geometry in &topology.objects.land.geometries {
        match geometry {
            Geometry::Polygon { arcs } => rings.extend(arcs.first().map(ring)),
            Geometry::MultiPolygon { arcs } => {
                rings.extend(arcs.iter().filter_map(|polygon| polygon.first().map(ring)))
            }
        }
    }
    rings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outline decodes to plausible land: many closed rings inside the map's bounds, with
    /// known places on land and the middle of the oceans outside every ring.
    #[test]
    fn the_outline_decodes_to_the_continents() {
        let rings = land_rings();
        assert!(rings.len() > 100, "{} rings", rings.len());
        for ring in &rings {
            assert!(ring.len() >= 4);
            let (first, last) = (ring[0], ring[ring.len() - 1]);
            assert!((first.0 - last.0).abs() < 1e-9 && (first.1 - last.1).abs() < 1e-9);
            assert!(ring.iter().all(
                |&(lon, lat)| (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)
            ));
        }
        let on_land = |lon: f64, lat: f64| rings.iter().any(|r| contains(r, lon, lat));
        assert!(on_land(2.35, 48.85), "Paris");
        assert!(on_land(-99.1, 19.4), "Mexico City");
        assert!(on_land(133.0, -25.0), "central Australia");
        assert!(!on_land(-40.0, 30.0), "the middle of the North Atlantic");
        assert!(!on_land(-150.0, 0.0), "the middle of the Pacific");
    }

    /// Ray casting: whether (x, y) is inside the ring.
    fn contains(ring: &Ring, x: f64, y: f64) -> bool {
        let mut inside = false;
        for pair in ring.windows(2) {
            let ((x1, y1), (x2, y2)) = (pair[0], pair[1]);
            if (y1 > y) != (y2 > y) && x < (x2 - x1) * (y - y1) / (y2 - y1) + x1 {
                inside = !inside;
            }
        }
        inside
    }
}
