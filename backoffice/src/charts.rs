//! The dashboard's charts: one `Chart` holds a chart's data, which becomes an SVG (plotters,
//! server-side), an HTML table beside it and a CSV download: the same numbers three ways.

use plotters::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// One line per series over the first column (an hour of the day, 0–24).
    Lines,
    /// Grouped bars, one group per row, labelled by the first column.
    Bars,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub note: String,
    pub kind: Kind,
    /// The first column labels the rows; the others are series.
    pub columns: Vec<String>,
    pub rows: Vec<(String, f64, Vec<Option<f64>>)>,
    /// On a line chart: a series drawn as a line inside a shaded band between two others
    /// (its interval), which get no lines of their own.
    pub band: Option<Band>,
}

/// Series indexes (0 = the first column after the label) of a line and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub line: usize,
    pub low: usize,
    pub high: usize,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x6f, 0xb4),
    RGBColor(0xe0, 0x7b, 0x16),
    RGBColor(0x2c, 0x9e, 0x4b),
    RGBColor(0x8a, 0x5c, 0xb8),
];

impl Chart {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Numbers as people read them: integers without a decimal point.
    pub fn fmt(v: Option<f64>) -> String {
        match v {
            None => String::new(),
            Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
        }
    }

    pub fn csv(&self) -> String {
        let mut out = self.columns.join(",") + "\n";
        for (label, _, values) in &self.rows {
            out += &csv_field(label);
            for v in values {
                out += ",";
                out += &Chart::fmt(*v);
            }
            out += "\n";
        }
        out
    }

    pub fn svg(&self) -> Result<String, String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (760, 260)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let ymax = self
                .rows
                .iter()
                .flat_map(|(_, _, v)| v.iter().flatten())
                .fold(1.0f64, |m, v| m.max(*v))
                * 1.1;
            let series = self.columns.len().saturating_sub(1);
            match self.kind {
                Kind::Lines => {
                    let mut chart = ChartBuilder::on(&root)
                        .margin(12)
                        .x_label_area_size(28)
                        .y_label_area_size(44)
                        .build_cartesian_2d(0f64..24f64, 0f64..ymax)
                        .map_err(|e| e.to_string())?;
                    chart
                        .configure_mesh()
                        .x_labels(13)
                        .x_desc(self.columns[0].as_str())
                        .draw()
                        .map_err(|e| e.to_string())?;
                    if let Some(band) = self.band {
                        let color = COLORS[band.line % COLORS.len()];
                        let mut first = true;
                        for run in self.band_runs(band) {
                            let drawn = chart
                                .draw_series(std::iter::once(Polygon::new(
                                    run,
                                    color.mix(0.22).filled(),
                                )))
                                .map_err(|e| e.to_string())?;
                            if std::mem::take(&mut first) {
                                let label = format!(
                                    "{}–{}",
                                    self.columns[band.low + 1],
                                    self.columns[band.high + 1]
                                );
                                drawn.label(label).legend(move |(x, y)| {
                                    Rectangle::new(
                                        [(x, y - 5), (x + 16, y + 5)],
                                        color.mix(0.22).filled(),
                                    )
                                });
                            }
                        }
                    }
                    for s in 0..series {
                        if self.band.is_some_and(|b| s == b.low || s == b.high) {
                            continue;
                        }
                        let color = COLORS[s % COLORS.len()];
                        let points: Vec<(f64, f64)> = self
                            .rows
                            .iter()
                            .filter_map(|(_, x, v)| v[s].map(|y| (*x, y)))
                            .collect();
                        chart
                            .draw_series(LineSeries::new(points, color.stroke_width(2)))
                            .map_err(|e| e.to_string())?
                            .label(self.columns[s + 1].as_str())
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                            });
                    }
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK.mix(0.3))
                        .draw()
                        .map_err(|e| e.to_string())?;
                }
                Kind::Bars => {
                    let n = self.rows.len().max(1) as f64;
                    let mut chart = ChartBuilder::on(&root)
                        .margin(12)
                        .x_label_area_size(28)
                        .y_label_area_size(44)
                        .build_cartesian_2d(0f64..n, 0f64..ymax)
                        .map_err(|e| e.to_string())?;
                    let labels: Vec<String> = self.rows.iter().map(|r| r.0.clone()).collect();
                    chart
                        .configure_mesh()
                        .disable_x_mesh()
                        .x_labels(self.rows.len().clamp(1, 24))
                        .x_label_formatter(&|x| {
                            labels
                                .get(x.floor() as usize)
                                .filter(|_| x.fract() == 0.0 || self.rows.len() < 2)
                                .cloned()
                                .unwrap_or_default()
                        })
                        .draw()
                        .map_err(|e| e.to_string())?;
                    let width = 0.8 / series.max(1) as f64;
                    for s in 0..series {
                        let color = COLORS[s % COLORS.len()];
                        let bars =
                            self.rows
                                .iter()
                                .enumerate()
                                .filter_map(move |(i, (_, _, v))| {
                                    let x0 = i as f64 + 0.1 + s as f64 * width;
                                    v[s].map(|y| {
                                        Rectangle::new([(x0, 0.0), (x0 + width, y)], color.filled())
                                    })
                                });
                        chart
                            .draw_series(bars)
                            .map_err(|e| e.to_string())?
                            .label(self.columns[s + 1].as_str())
                            .legend(move |(x, y)| {
                                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                            });
                    }
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK.mix(0.3))
                        .draw()
                        .map_err(|e| e.to_string())?;
                }
            }
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(svg)
    }
}

impl Chart {
    /// The band's outline for each run of rows that have both edges: along the high edge,
    /// then back along the low one. A row without an edge breaks the band rather than
    /// bridging it with a guess.
    fn band_runs(&self, band: Band) -> Vec<Vec<(f64, f64)>> {
        let mut runs = Vec::new();
        let mut run: Vec<(f64, f64, f64)> = Vec::new();
        let mut close = |run: &mut Vec<(f64, f64, f64)>| {
            if !run.is_empty() {
                let mut outline: Vec<(f64, f64)> = run.iter().map(|(x, _, h)| (*x, *h)).collect();
                outline.extend(run.iter().rev().map(|(x, l, _)| (*x, *l)));
                runs.push(outline);
                run.clear();
            }
        };
        for (_, x, values) in &self.rows {
            match (values[band.low], values[band.high]) {
                (Some(l), Some(h)) => run.push((*x, l, h)),
                _ => close(&mut run),
            }
        }
        close(&mut run);
        runs
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_renders_to_svg_and_csv_with_the_same_numbers() {
        let chart = Chart {
            id: "t",
            title: "t".into(),
            note: String::new(),
            kind: Kind::Bars,
            columns: vec!["hour".into(), "visitors".into(), "passers-by".into()],
            rows: vec![
                ("10:00".into(), 10.0, vec![Some(3.0), Some(7.0)]),
                ("11:00".into(), 11.0, vec![Some(2.5), None]),
            ],
            band: None,
        };
        assert_eq!(
            chart.csv(),
            "hour,visitors,passers-by\n10:00,3,7\n11:00,2.50,\n"
        );
        let svg = chart.svg().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<rect"), "bars are drawn");
        assert!(svg.contains("visitors"), "the legend names the series");
        let lines = Chart {
            kind: Kind::Lines,
            ..chart
        };
        assert!(lines.svg().unwrap().contains("<polyline"));
    }

    #[test]
    fn an_interval_is_a_shaded_band_around_its_line_broken_where_an_edge_is_missing() {
        let row = |x: f64, e: f64, l: Option<f64>, h: Option<f64>| {
            (format!("{x}"), x, vec![Some(e), l, h])
        };
        let chart = Chart {
            id: "t",
            title: "t".into(),
            note: String::new(),
            kind: Kind::Lines,
            columns: vec![
                "window".into(),
                "estimate".into(),
                "low".into(),
                "high".into(),
            ],
            rows: vec![
                row(10.0, 5.0, Some(4.0), Some(7.0)),
                row(10.25, 6.0, Some(5.0), Some(8.0)),
                row(10.5, 6.0, None, None),
                row(10.75, 2.0, Some(1.0), Some(3.0)),
            ],
            band: Some(Band {
                line: 0,
                low: 1,
                high: 2,
            }),
        };
        let runs = chart.band_runs(chart.band.unwrap());
        assert_eq!(
            runs,
            vec![
                vec![(10.0, 7.0), (10.25, 8.0), (10.25, 5.0), (10.0, 4.0)],
                vec![(10.75, 3.0), (10.75, 1.0)],
            ]
        );
        let svg = chart.svg().unwrap();
        assert_eq!(svg.matches("<polygon").count(), 2, "{svg}");
        // The estimate is a line; its edges are the band, not lines of their own (nor
        // legend entries): four polylines fewer than the same chart drawn as three lines.
        let plain = Chart {
            band: None,
            ..chart.clone()
        }
        .svg()
        .unwrap();
        assert_eq!(plain.matches("<polygon").count(), 0);
        assert_eq!(
            plain.matches("<polyline").count() - svg.matches("<polyline").count(),
            4
        );
        assert!(svg.contains("low–high"), "the legend names the band");
        assert!(chart.csv().starts_with("window,estimate,low,high\n"));
    }
}
