//! The built-in demo runtime (`aitbc-gpu-agent demo-runtime`), run for jobs whose listing has
//! no command. It does real, deterministic work without downloads:
//!
//! - inference: renders a PNG from the prompt (a pattern seeded by the prompt's SHA-256; size
//!   from the `resolution=WxH` param, default 256x256) into `$AITBC_OUTPUT_DIR/image.png`, plus
//!   `result.txt`;
//! - training: fits a linear regression (or a logistic one when every label is 0 or 1) by
//!   gradient descent on the CSV in `$AITBC_INPUT` (last column = label; a header row is
//!   skipped), or on a synthetic dataset seeded by the prompt, and writes `model.json`.
//!
//! Both print `AITBC_PROGRESS <percent>` lines as they go.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MAX_SIDE: u32 = 4096;
pub const DEFAULT_SIDE: u32 = 256;
const MAX_ROWS: usize = 1_000_000;
const MAX_EPOCHS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Invalid(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// Parses `WxH` (each 1..=4096).
pub fn parse_resolution(s: &str) -> Result<(u32, u32), DemoError> {
    let bad = || {
        DemoError::Invalid(format!(
            "resolution {s:?} must be WxH with sides 1..={MAX_SIDE}"
        ))
    };
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(bad());
    }
    Ok((w, h))
}

/// Renders an RGB image deterministically from `prompt` (integer arithmetic only, so every
/// machine produces the same bytes). `progress` gets percentages as rows complete.
pub fn render_rgb(prompt: &str, width: u32, height: u32, mut progress: impl FnMut(u32)) -> Vec<u8> {
    let seed: [u8; 32] = Sha256::new_with_prefix(b"aitbc/demo-image/v1\0")
        .chain_update(prompt.as_bytes())
        .finalize()
        .into();
    let k = |i: usize| u32::from(seed[i]) | 1;
    let (cx, cy) = (
        u64::from(seed[20]) * u64::from(width) / 255,
        u64::from(seed[21]) * u64::from(height) / 255,
    );
    let radius = u64::from(width.min(height)) * (u64::from(seed[22]) % 40 + 10) / 100;
    let mut data = Vec::with_capacity(width as usize * height as usize * 3);
    let mut last = 0;
    for y in 0..height {
        for x in 0..width {
            let (xu, yu) = (x.wrapping_mul(256) / width, y.wrapping_mul(256) / height);
            let mut r =
                (xu.wrapping_mul(k(0)) ^ yu.wrapping_mul(k(1))).wrapping_add(u32::from(seed[6]));
            let mut g = ((xu + yu).wrapping_mul(k(2)) ^ (xu.wrapping_mul(yu) >> (seed[7] % 5)))
                .wrapping_add(u32::from(seed[8]));
            let mut b = (xu.wrapping_mul(k(3)).wrapping_sub(yu.wrapping_mul(k(4))))
                .wrapping_add(u32::from(seed[9]));
            let (dx, dy) = (u64::from(x).abs_diff(cx), u64::from(y).abs_diff(cy));
            if dx * dx + dy * dy <= radius * radius {
                r = 255 - (r & 0xff);
                g = 255 - (g & 0xff);
                b = 255 - (b & 0xff);
            }
            data.extend_from_slice(&[r as u8, g as u8, b as u8]);
        }
        let pct = (y + 1) * 100 / height;
        if pct / 10 > last / 10 {
            progress(pct);
            last = pct;
        }
    }
    data
}

/// PNG bytes of [`render_rgb`].
pub fn render_png(
    prompt: &str,
    width: u32,
    height: u32,
    progress: impl FnMut(u32),
) -> Result<Vec<u8>, DemoError> {
    let rgb = render_rgb(prompt, width, height, progress);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&rgb)?;
    }
    Ok(out)
}

/// Rows of features with one label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub features: Vec<Vec<f64>>,
    pub labels: Vec<f64>,
}

/// Parses a numeric CSV: the last column is the label; a non-numeric first row is a header.
pub fn parse_csv(text: &str) -> Result<Dataset, DemoError> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut width = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Result<Vec<f64>, _> = line.split(',').map(|c| c.trim().parse::<f64>()).collect();
        let cells = match cells {
            Ok(c) => c,
            Err(_) if features.is_empty() && width.is_none() => {
                width = Some(line.split(',').count());
                continue;
            }
            Err(_) => {
                return Err(DemoError::Invalid(format!(
                    "line {}: not all cells are numbers",
                    n + 1
                )))
            }
        };
        if cells.len() < 2 {
            return Err(DemoError::Invalid(format!(
                "line {}: need at least one feature and a label",
                n + 1
            )));
        }
        if cells.iter().any(|v| !v.is_finite()) {
            return Err(DemoError::Invalid(format!(
                "line {}: values must be finite",
                n + 1
            )));
        }
        if *width.get_or_insert(cells.len()) != cells.len() {
            return Err(DemoError::Invalid(format!(
                "line {}: expected {} columns",
                n + 1,
                width.unwrap_or(0)
            )));
        }
        if labels.len() >= MAX_ROWS {
            return Err(DemoError::Invalid(format!("more than {MAX_ROWS} rows")));
        }
        let (label, feats) = cells
            .split_last()
            .ok_or_else(|| DemoError::Invalid("empty row".into()))?;
        labels.push(*label);
        features.push(feats.to_vec());
    }
    if labels.is_empty() {
        return Err(DemoError::Invalid("the CSV has no data rows".into()));
    }
    Ok(Dataset { features, labels })
}

/// 200 rows of `y = 3*x1 - 2*x2 + 0.5 + noise`, seeded by `seed`.
pub fn synthetic_dataset(seed: &str) -> Dataset {
    let mut state = u64::from_le_bytes(
        Sha256::digest(format!("aitbc/demo-data/v1\0{seed}").as_bytes())[..8]
            .try_into()
            .unwrap_or([7; 8]),
    ) | 1;
    let mut next = || {
        // xorshift64*: deterministic, good enough for demo data.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..200 {
        let x1 = next() * 4.0 - 2.0;
        let x2 = next() * 4.0 - 2.0;
        let noise = (next() - 0.5) * 0.1;
        features.push(vec![x1, x2]);
        labels.push(3.0 * x1 - 2.0 * x2 + 0.5 + noise);
    }
    Dataset { features, labels }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Model {
    pub kind: &'static str,
    /// Weights on the original (unstandardized) feature scale.
    pub weights: Vec<f64>,
    pub bias: f64,
    pub loss: f64,
    pub initial_loss: f64,
    pub epochs: u32,
    pub learning_rate: f64,
    pub samples: usize,
    pub loss_history: Vec<f64>,
}

/// Full-batch gradient descent on standardized features; mean squared error (linear) or
/// log-loss (logistic, when every label is 0 or 1).
pub fn train(
    data: &Dataset,
    epochs: u32,
    learning_rate: f64,
    mut progress: impl FnMut(u32),
) -> Model {
    let n = data.labels.len();
    let d = data.features.first().map(Vec::len).unwrap_or(0);
    let logistic = data.labels.iter().all(|y| *y == 0.0 || *y == 1.0);
    let mean: Vec<f64> = (0..d)
        .map(|j| data.features.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let std: Vec<f64> = (0..d)
        .map(|j| {
            let v = data
                .features
                .iter()
                .map(|r| (r[j] - mean[j]).powi(2))
                .sum::<f64>()
                / n as f64;
            if v > 0.0 {
                v.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let x: Vec<Vec<f64>> = data
        .features
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, v)| (v - mean[j]) / std[j])
                .collect()
        })
        .collect();
    let mut w = vec![0.0; d];
    let mut b = 0.0;
    let predict = |w: &[f64], b: f64, row: &[f64]| {
        let z = b + w.iter().zip(row).map(|(a, c)| a * c).sum::<f64>();
        if logistic {
            1.0 / (1.0 + (-z).exp())
        } else {
            z
        }
    };
    let loss_of = |w: &[f64], b: f64| {
        x.iter()
            .zip(&data.labels)
            .map(|(row, y)| {
                let p = predict(w, b, row);
                if logistic {
                    let p = p.clamp(1e-12, 1.0 - 1e-12);
                    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
                } else {
                    (p - y).powi(2)
                }
            })
            .sum::<f64>()
            / n as f64
    };
    let initial_loss = loss_of(&w, b);
    let mut history = Vec::new();
    let mut last_pct = 0;
    for epoch in 0..epochs {
        let mut gw = vec![0.0; d];
        let mut gb = 0.0;
        for (row, y) in x.iter().zip(&data.labels) {
            let err = predict(&w, b, row) - y;
            let scale = if logistic { 1.0 } else { 2.0 };
            for j in 0..d {
                gw[j] += scale * err * row[j];
            }
            gb += scale * err;
        }
        for j in 0..d {
            w[j] -= learning_rate * gw[j] / n as f64;
        }
        b -= learning_rate * gb / n as f64;
        let pct = (epoch + 1) * 100 / epochs;
        if pct / 10 > last_pct / 10 {
            history.push(loss_of(&w, b));
            progress(pct);
            last_pct = pct;
        }
    }
    // Back to the original feature scale.
    let weights: Vec<f64> = (0..d).map(|j| w[j] / std[j]).collect();
    let bias = b - (0..d).map(|j| w[j] * mean[j] / std[j]).sum::<f64>();
    Model {
        kind: if logistic { "logistic" } else { "linear" },
        weights,
        bias,
        loss: loss_of(&w, b),
        initial_loss,
        epochs,
        learning_rate,
        samples: n,
        loss_history: history,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(|source| DemoError::Io {
        path: path.into(),
        source,
    })
}

fn param(name: &str) -> Option<String> {
    std::env::var(format!("AITBC_PARAM_{name}"))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn report_progress(p: u32) {
    println!("AITBC_PROGRESS {p}");
    let _ = std::io::stdout().flush();
}

/// Entry point of `aitbc-gpu-agent demo-runtime`: reads the job from `AITBC_*` variables.
pub fn run_from_env() -> Result<(), DemoError> {
    let out_dir = PathBuf::from(
        std::env::var("AITBC_OUTPUT_DIR")
            .map_err(|_| DemoError::Invalid("AITBC_OUTPUT_DIR is not set".into()))?,
    );
    let prompt = std::env::var("AITBC_PROMPT").unwrap_or_default();
    let model = std::env::var("AITBC_MODEL").unwrap_or_default();
    let kind = std::env::var("AITBC_JOB_KIND").unwrap_or_else(|_| "inference".into());
    println!(
        "demo runtime: {kind} job {}",
        std::env::var("AITBC_JOB_ID").unwrap_or_default()
    );
    report_progress(0);
    match kind.as_str() {
        "training" => {
            let data = match std::env::var("AITBC_INPUT") {
                Ok(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|source| DemoError::Io {
                        path: p.into(),
                        source,
                    })?;
                    parse_csv(&text)?
                }
                Err(_) => synthetic_dataset(&prompt),
            };
            let epochs = match param("EPOCHS") {
                Some(e) => e
                    .parse::<u32>()
                    .ok()
                    .filter(|e| (1..=MAX_EPOCHS).contains(e))
                    .ok_or_else(|| {
                        DemoError::Invalid(format!("epochs {e:?} must be 1..={MAX_EPOCHS}"))
                    })?,
                None => 200,
            };
            let lr = match param("LEARNING_RATE") {
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0 && *v <= 10.0)
                    .ok_or_else(|| {
                        DemoError::Invalid(format!("learning_rate {v:?} must be in (0, 10]"))
                    })?,
                None => 0.1,
            };
            let m = train(&data, epochs, lr, report_progress);
            let json =
                serde_json::to_vec_pretty(&m).map_err(|e| DemoError::Invalid(e.to_string()))?;
            write(&out_dir.join("model.json"), &json)?;
            let summary = format!(
                "kind: {}\nsamples: {}\nepochs: {}\ninitial_loss: {}\nloss: {}\nweights: {:?}\nbias: {}\n",
                m.kind, m.samples, m.epochs, m.initial_loss, m.loss, m.weights, m.bias
            );
            write(&out_dir.join("result.txt"), summary.as_bytes())?;
            println!(
                "trained {} model on {} samples: loss {} -> {}",
                m.kind, m.samples, m.initial_loss, m.loss
            );
        }
        "inference" => {
            let (w, h) = match param("RESOLUTION") {
                Some(r) => parse_resolution(&r)?,
                None => (DEFAULT_SIDE, DEFAULT_SIDE),
            };
            let png = render_png(&prompt, w, h, report_progress)?;
            write(&out_dir.join("image.png"), &png)?;
            let sha = hex::encode(Sha256::digest(&png));
            let summary =
                format!("prompt: {prompt}\nmodel: {model}\nresolution: {w}x{h}\nimage: image.png\nsha256: {sha}\n");
            write(&out_dir.join("result.txt"), summary.as_bytes())?;
            println!("rendered {w}x{h} image.png ({} bytes)", png.len());
        }
        other => return Err(DemoError::Invalid(format!("unknown job kind {other:?}"))),
    }
    report_progress(100);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_is_valid_deterministic_and_prompt_dependent() {
        let mut seen = Vec::new();
        let a = render_png("a red fox", 64, 32, |p| seen.push(p)).unwrap();
        assert_eq!(a, render_png("a red fox", 64, 32, |_| {}).unwrap());
        assert_ne!(a, render_png("a blue fox", 64, 32, |_| {}).unwrap());
        assert_eq!(*seen.last().unwrap(), 100);
        let dec = png::Decoder::new(std::io::Cursor::new(&a));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (64, 32));
        assert_eq!(
            &buf[..info.buffer_size()],
            &render_rgb("a red fox", 64, 32, |_| {})[..]
        );
    }

    #[test]
    fn resolutions_parse() {
        assert_eq!(parse_resolution("512x256").unwrap(), (512, 256));
        assert_eq!(parse_resolution(" 8X8 ").unwrap(), (8, 8));
        for bad in ["0x1", "5000x1", "abc", "12", "1x-1"] {
            assert!(parse_resolution(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn linear_regression_recovers_the_synthetic_weights() {
        let data = synthetic_dataset("seed");
        let m = train(&data, 300, 0.1, |_| {});
        assert_eq!(m.kind, "linear");
        assert!((m.weights[0] - 3.0).abs() < 0.05, "{:?}", m.weights);
        assert!((m.weights[1] + 2.0).abs() < 0.05, "{:?}", m.weights);
        assert!((m.bias - 0.5).abs() < 0.05, "{}", m.bias);
        assert!(m.loss < m.initial_loss / 100.0);
    }

    #[test]
    fn logistic_regression_on_a_csv_separates_classes() {
        let csv = "x,label\n-3,0\n-2,0\n-1,0\n-0.5,0\n0.5,1\n1,1\n2,1\n3,1\n";
        let data = parse_csv(csv).unwrap();
        assert_eq!(data.labels.len(), 8);
        let m = train(&data, 500, 0.5, |_| {});
        assert_eq!(m.kind, "logistic");
        assert!(m.weights[0] > 0.0);
        assert!(m.loss < 0.3, "{}", m.loss);
        assert!(parse_csv("a,b\n1,x\n").is_err());
        assert!(parse_csv("1,2\n1,2,3\n").is_err());
        assert!(parse_csv("only a header\n").is_err());
    }
}
