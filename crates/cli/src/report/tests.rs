//! Every figure rendered from fixed inputs, checked through what it holds: its size, the text read
//! back from its SVG, the numbers in the heat map's cells, the pixels of the image grid; and the
//! HTML page's inlined images.

use base64::Engine;
use image::{Rgb, RgbImage};

use super::html::{Page, escape};
use super::plots::{self, Bars, Figure, HeatMap, Panel, Series, XAxis};
use super::table::Table;

/// The contents of the SVG's `<text>` elements, in drawing order (entities decoded).
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find('>')? + 1;
            let end = rest.find("</text>")?;
            Some(
                rest[start..end]
                    .trim()
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&amp;", "&"),
            )
        })
        .collect()
}

/// The PNG decoded, after checking it has the figure's size.
fn decoded(figure: &Figure) -> RgbImage {
    let image = image::load_from_memory(&figure.png)
        .expect("a PNG")
        .to_rgb8();
    assert_eq!(image.dimensions(), figure.size);
    image
}

fn assert_has(texts: &[String], wanted: &[&str]) {
    for w in wanted {
        assert!(texts.iter().any(|t| t == w), "no text {w:?} in {texts:?}");
    }
}

fn series(name: &str, colour: usize, points: &[(f64, f64)]) -> Series {
    Series {
        name: name.into(),
        points: points.to_vec(),
        colour,
    }
}

#[test]
fn line_panels_have_titles_axes_ticks_and_legends() {
    let panel = |title: &str, axis| Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        x_axis: axis,
        series: vec![
            series(
                "CoOp",
                0,
                &[(1.0, 3.0), (2.0, 2.0), (3.0, f64::NAN), (4.0, 1.0)],
            ),
            series("MoCoOp", 1, &[(1.0, 2.5), (2.0, 1.5), (4.0, 0.5)]),
        ],
    };
    let figure = plots::line_panels(
        "Training curves",
        &[
            panel("total loss", XAxis::Linear),
            panel("loss term L_ce", XAxis::Linear),
            panel("shots", XAxis::Log2),
            panel("learning rate", XAxis::Linear),
        ],
    )
    .unwrap();
    // Three panels to a row: two rows.
    assert_eq!(figure.size, (3 * 460, 2 * 330 + 40));
    let image = decoded(&figure);
    let blue = image
        .pixels()
        .filter(|p| **p == Rgb([31, 119, 180]))
        .count();
    let red = image.pixels().filter(|p| **p == Rgb([214, 39, 40])).count();
    assert!(
        blue > 100 && red > 100,
        "lines drawn: {blue} blue, {red} red pixels"
    );
    let texts = svg_texts(figure.svg.as_ref().unwrap());
    assert_has(
        &texts,
        &[
            "Training curves",
            "total loss",
            "loss term L_ce",
            "learning rate",
            "epoch",
            "loss",
        ],
    );
    // A legend entry per series per panel.
    assert_eq!(
        texts.iter().filter(|t| *t == "MoCoOp").count(),
        4,
        "{texts:?}"
    );
    // Linear axes are labelled in epochs, the log axis in powers of two (x = 1, 2, 4 → 0, 1, 2).
    assert_has(&texts, &["1", "2", "3", "4"]);
    assert!(
        texts
            .iter()
            .any(|t| t.parse::<f64>().is_ok_and(|v| v > 0.0 && v < 1.0))
    );
}

#[test]
fn log2_axes_are_labelled_with_the_shot_counts() {
    let shots: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0]
        .iter()
        .map(|&k| (k, 50.0 + k))
        .collect();
    let figure = plots::line_panels(
        "Few-shot",
        &[Panel {
            title: "dtd".into(),
            x_label: "shots per class".into(),
            y_label: "accuracy (%)".into(),
            x_axis: XAxis::Log2,
            series: vec![series("coop", 0, &shots)],
        }],
    )
    .unwrap();
    let texts = svg_texts(figure.svg.as_ref().unwrap());
    assert_has(
        &texts,
        &["1", "2", "4", "8", "16", "shots per class", "dtd", "coop"],
    );
    // No tick between powers of two is labelled.
    assert!(!texts.iter().any(|t| t == "3" || t == "1.41"), "{texts:?}");
}

#[test]
fn heat_map_cells_hold_the_routing_counts() {
    let counts = vec![vec![17, 0, 3], vec![5, 19, 1]];
    let map = HeatMap {
        title: "Router choices per image style".into(),
        row_label: "image style".into(),
        col_label: "expert".into(),
        rows: vec!["photo".into(), "sketch".into()],
        cols: vec![
            "a photo of a {}.".into(),
            "a sketch of a {}.".into(),
            "a {} made of texture.".into(),
        ],
        counts: counts.clone(),
    };
    let figure = plots::heat_map(&map).unwrap();
    let image = decoded(&figure);
    let texts = svg_texts(figure.svg.as_ref().unwrap());
    assert_has(
        &texts,
        &[
            "Router choices per image style",
            "image style",
            "expert",
            "photo",
            "sketch",
            "a photo of a {}.",
            "a {} made of texture.",
        ],
    );
    // The only numbers drawn are the cells', row by row.
    let numbers: Vec<usize> = texts.iter().filter_map(|t| t.parse().ok()).collect();
    assert_eq!(numbers, counts.concat());
    // The largest count is the darkest cell; a zero stays white.
    let darkest = image.pixels().map(|p| p.0[0]).min().unwrap();
    assert!(darkest <= 10, "{darkest}");
    assert!(image.pixels().filter(|p| p.0 == [255, 255, 255]).count() > 1000);
}

#[test]
fn bars_carry_groups_legend_and_values() {
    let bars = Bars {
        title: "base2new: base / new / HM".into(),
        y_label: "accuracy (%)".into(),
        groups: vec!["dtd · coop".into(), "dtd · mocoop".into()],
        bars: vec!["base".into(), "new".into(), "HM".into()],
        values: vec![vec![80.0, 50.0, 61.5], vec![79.0, 66.0, 71.9]],
    };
    let figure = plots::bars(&bars).unwrap();
    let image = decoded(&figure);
    let texts = svg_texts(figure.svg.as_ref().unwrap());
    assert_has(
        &texts,
        &[
            "base2new: base / new / HM",
            "accuracy (%)",
            "dtd · coop",
            "dtd · mocoop",
            "base",
            "new",
            "HM",
            "61.5",
            "71.9",
            "80.0",
        ],
    );
    for colour in [[31, 119, 180], [214, 39, 40], [44, 160, 44]] {
        let n = image.pixels().filter(|p| p.0 == colour).count();
        assert!(n > 500, "bar colour {colour:?}: {n} pixels");
    }
}

#[test]
fn image_grid_places_each_picture_in_its_row() {
    let solid = |c: [u8; 3]| RgbImage::from_pixel(8, 8, Rgb(c));
    let rows = vec![
        (
            "expert 0: a photo of a {}.".to_string(),
            vec![solid([200, 0, 0]), solid([0, 200, 0])],
        ),
        (
            "expert 1: a sketch of a {}.".to_string(),
            vec![solid([0, 0, 200])],
        ),
    ];
    let figure = plots::image_grid("Examples", &rows, 32).unwrap();
    assert!(figure.svg.is_none());
    let image = decoded(&figure);
    let count = |c: [u8; 3]| image.pixels().filter(|p| p.0 == c).count();
    // Each picture is scaled to 32 x 32 pixels.
    assert_eq!(count([200, 0, 0]), 32 * 32);
    assert_eq!(count([0, 200, 0]), 32 * 32);
    assert_eq!(count([0, 0, 200]), 32 * 32);
    let first_red = image
        .enumerate_pixels()
        .find(|(_, _, p)| p.0 == [200, 0, 0])
        .unwrap();
    let first_blue = image
        .enumerate_pixels()
        .find(|(_, _, p)| p.0 == [0, 0, 200])
        .unwrap();
    assert!(first_blue.1 > first_red.1 + 32, "row 1 is below row 0");
    // The labels are drawn (dark pixels left of the pictures).
    let labels = image
        .enumerate_pixels()
        .filter(|(x, _, p)| *x < first_red.0 && p.0[0] < 100)
        .count();
    assert!(labels > 50, "{labels}");
}

#[test]
fn the_page_inlines_its_figures_and_escapes_text() {
    let figure = plots::image_grid("x", &[("a".into(), vec![RgbImage::new(2, 2)])], 8).unwrap();
    let mut page = Page::new("run <1> & more");
    let mut table = Table::new(["method", "HM"]);
    table.push(["MoCoOp", "72.5"]);
    page.table(&table);
    page.figure(&figure, "examples");
    page.code("{\"a\": 1}");
    let html = page.render();
    assert!(html.contains("<title>run &lt;1&gt; &amp; more</title>"));
    assert!(html.contains("<td>MoCoOp</td><td>72.5</td>"));
    assert!(html.contains("{&quot;a&quot;: 1}"));
    let data = html.split("data:image/png;base64,").nth(1).unwrap();
    let data = &data[..data.find('"').unwrap()];
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert_eq!(png, figure.png);
    assert!(
        !html.contains("src=\"http") && !html.contains("<link"),
        "self-contained"
    );
    assert_eq!(escape("a'b\"c"), "a&#39;b&quot;c");
    assert_eq!(
        table.markdown(),
        "| method | HM |\n|---|---|\n| MoCoOp | 72.5 |\n"
    );
}

#[test]
fn the_fewshot_report_plots_every_method_against_shots() {
    let out = tempfile::tempdir().unwrap();
    for (method, offset) in [("coop", 0.0), ("mocoop", 5.0)] {
        let stat = |mean: f64| serde_json::json!({"mean": mean + offset, "std": 1.0, "n": 2});
        let results = serde_json::json!({
            "protocol": "fewshot",
            "method": method,
            "cells": [],
            "table": {
                "title": format!("fewshot — {method}"),
                "columns": ["1 shots", "4 shots", "16 shots"],
                "rows": [["dtd", [stat(40.0), stat(50.0), stat(60.0)]],
                         ["eurosat", [stat(55.0), null, stat(75.0)]]],
            },
        });
        let file = out.path().join(format!("results-fewshot-{method}.json"));
        std::fs::write(file, results.to_string()).unwrap();
    }
    let dir = super::protocol::write(out.path(), "fewshot").unwrap();
    assert_eq!(dir, out.path().join("report-fewshot"));
    let svg = std::fs::read_to_string(dir.join("accuracy_vs_shots.svg")).unwrap();
    let texts = svg_texts(&svg);
    assert_has(
        &texts,
        &[
            "dtd",
            "eurosat",
            "coop",
            "mocoop",
            "1",
            "4",
            "16",
            "shots per class",
        ],
    );
    // One panel per dataset, a legend entry per method in each.
    assert_eq!(texts.iter().filter(|t| *t == "mocoop").count(), 2);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("<td>45.00 ± 1.00</td>") && html.contains("<td>–</td>"),
        "{html}"
    );
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        md.contains("| eurosat | 60.00 ± 1.00 | – | 80.00 ± 1.00 |"),
        "{md}"
    );
    // Both methods in one table first, a row per dataset and method.
    let merged = "| Dataset | Method | 1 shots | 4 shots | 16 shots |";
    let all = &md[md.find("## All methods").expect("merged table")..];
    let all = &all[..all.find("## fewshot").expect("then each method's")];
    assert!(all.contains(merged), "{md}");
    let rows: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("| dtd") || l.starts_with("| eurosat"))
        .collect();
    assert_eq!(rows.len(), 4, "{all}");
    assert!(
        rows[1].starts_with("| dtd | mocoop | 45.00 ± 1.00 |"),
        "{all}"
    );
    assert!(rows[2].starts_with("| eurosat | coop |"), "{all}");
    assert!(
        html.contains("<td>dtd</td><td>mocoop</td><td>45.00 ± 1.00</td>"),
        "{html}"
    );
}
