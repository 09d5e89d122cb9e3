//! The figures of one run: groups of rows (contenders), each with medians over
//! the rounds, the ratio to the group's reference row, and the targets;
//! printed as a table or as JSON.

use serde::Serialize;

/// One measured quantity over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Cell {
    pub fn of(samples: Vec<f64>) -> Option<Cell> {
        let mut s: Vec<f64> = samples.into_iter().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        let raw = s.clone();
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        };
        Some(Cell {
            median,
            min: s[0],
            max: s[s.len() - 1],
            samples: raw,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    AtMost,
    AtLeast,
}

/// What a target is checked against.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// The row's first column divided by the reference row's.
    Ratio,
    /// The median of this column.
    Column(usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub on: On,
    pub cmp: Cmp,
    pub value: f64,
    /// As the issue words it, e.g. "≤ 0.2× ipmipower".
    pub text: String,
    /// None when the row has no figure to check.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub reference: bool,
    pub cells: Vec<Option<Cell>>,
    pub ratio: Option<f64>,
    /// Why this contender has no figures (it failed to run).
    pub error: Option<String>,
    pub targets: Vec<Target>,
}

impl Row {
    pub fn new(label: impl Into<String>) -> Row {
        Row {
            label: label.into(),
            reference: false,
            cells: Vec::new(),
            ratio: None,
            error: None,
            targets: Vec::new(),
        }
    }
    pub fn reference(mut self) -> Row {
        self.reference = true;
        self
    }
    pub fn cells(mut self, columns: Vec<Vec<f64>>) -> Row {
        self.cells = columns.into_iter().map(Cell::of).collect();
        self
    }
    pub fn error(mut self, e: Option<String>) -> Row {
        self.error = e;
        self
    }
    pub fn target(mut self, on: On, cmp: Cmp, value: f64, text: impl Into<String>) -> Row {
        self.targets.push(Target {
            on,
            cmp,
            value,
            text: text.into(),
            met: None,
        });
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    pub unit: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: String,
    pub title: String,
    /// What the figures are, exactly; printed under the title.
    pub notes: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

impl Group {
    pub fn new(id: impl Into<String>, title: impl Into<String>, columns: &[(&str, &str)]) -> Group {
        Group {
            id: id.into(),
            title: title.into(),
            notes: Vec::new(),
            columns: columns
                .iter()
                .map(|(n, u)| Column {
                    name: n.to_string(),
                    unit: u.to_string(),
                })
                .collect(),
            rows: Vec::new(),
        }
    }
    pub fn note(mut self, n: impl Into<String>) -> Group {
        self.notes.push(n.into());
        self
    }

    /// Ratios to the reference row and the targets' verdicts.
    pub fn finish(&mut self) {
        let base = self
            .rows
            .iter()
            .find(|r| r.reference)
            .and_then(|r| r.cells.first().cloned().flatten())
            .map(|c| c.median);
        for row in &mut self.rows {
            row.ratio = match (base, row.cells.first().cloned().flatten()) {
                (Some(b), Some(c)) if b > 0.0 => Some(c.median / b),
                _ => None,
            };
            let ratio = row.ratio;
            let cells = row.cells.clone();
            for t in &mut row.targets {
                let v = match t.on {
                    On::Ratio => ratio,
                    On::Column(i) => cells.get(i).cloned().flatten().map(|c| c.median),
                };
                t.met = v.map(|v| match t.cmp {
                    Cmp::AtMost => v <= t.value,
                    Cmp::AtLeast => v >= t.value,
                });
            }
        }
    }
}

/// A part of the issue this run could not measure, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub what: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub rounds: usize,
    pub date: String,
    pub host: String,
    pub daemon: String,
    pub groups: Vec<Group>,
    pub missing: Vec<Missing>,
    /// Contenders that failed to run (the run then exits non-zero).
    pub failures: Vec<String>,
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

impl Report {
    pub fn print_table(&self) {
        println!(
            "rack-agent bench: mode {}, {} round(s), {}",
            self.mode, self.rounds, self.date
        );
        println!("host: {}", self.host);
        println!("daemon: {}", self.daemon);
        println!("(every figure: the median over the rounds; [min–max] for the first column; ratio: the first column over the reference row's)");
        for g in &self.groups {
            println!("\n== {} ==", g.title);
            for n in &g.notes {
                println!("   {n}");
            }
            let mut header = vec!["contender".to_string()];
            for (i, c) in g.columns.iter().enumerate() {
                let unit = if c.unit.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.unit)
                };
                header.push(if i == 0 {
                    format!("{}{unit} [min–max]", c.name)
                } else {
                    format!("{}{unit}", c.name)
                });
            }
            let has_ratio = g.rows.iter().any(|r| r.reference);
            if has_ratio {
                header.push("ratio".into());
            }
            header.push("target".into());
            let mut lines = vec![header];
            for r in &g.rows {
                let mut line = vec![if r.reference {
                    format!("{} [reference]", r.label)
                } else {
                    r.label.clone()
                }];
                if let Some(e) = &r.error {
                    line.push(format!("FAILED: {e}"));
                    lines.push(line);
                    continue;
                }
                for (i, c) in r.cells.iter().enumerate() {
                    line.push(match c {
                        None => "–".into(),
                        Some(c) if i == 0 && c.samples.len() > 1 => format!(
                            "{} [{}–{}]",
                            fmt_value(c.median),
                            fmt_value(c.min),
                            fmt_value(c.max)
                        ),
                        Some(c) => fmt_value(c.median),
                    });
                }
                while line.len() < g.columns.len() + 1 {
                    line.push("–".into());
                }
                if has_ratio {
                    line.push(r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default());
                }
                line.push(
                    r.targets
                        .iter()
                        .map(|t| {
                            let verdict = match t.met {
                                Some(true) => "met",
                                Some(false) => "MISSED",
                                None => "no figure",
                            };
                            format!("{} {verdict}", t.text)
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                lines.push(line);
            }
            let cols = lines.iter().map(|l| l.len()).max().unwrap_or(0);
            let mut widths = vec![0usize; cols];
            for l in &lines {
                // A failure message spans the rest of the line.
                if l.len() == 2 && l[1].starts_with("FAILED") {
                    widths[0] = widths[0].max(l[0].chars().count());
                    continue;
                }
                for (i, cell) in l.iter().enumerate() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
            for l in &lines {
                let mut out = String::from("  ");
                for (i, cell) in l.iter().enumerate() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    if i == 0 || i + 1 == l.len() {
                        out.push_str(cell);
                        out.push_str(&" ".repeat(pad));
                    } else {
                        out.push_str(&" ".repeat(pad));
                        out.push_str(cell);
                    }
                    out.push_str("  ");
                }
                println!("{}", out.trim_end());
            }
        }
        if !self.missing.is_empty() {
            println!("\n== not measured in this run ==");
            for m in &self.missing {
                println!("  {}: {}", m.what, m.why);
            }
        }
        if !self.failures.is_empty() {
            println!("\n== contenders that FAILED to run ==");
            for f in &self.failures {
                println!("  {f}");
            }
        }
        let (met, missed): (Vec<&Target>, Vec<&Target>) = self
            .groups
            .iter()
            .flat_map(|g| g.rows.iter())
            .flat_map(|r| r.targets.iter())
            .filter(|t| t.met.is_some())
            .partition(|t| t.met == Some(true));
        println!(
            "\ntargets: {} met, {} missed (a missed target does not fail the run)",
            met.len(),
            missed.len()
        );
    }
}
