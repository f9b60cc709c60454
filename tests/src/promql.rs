//! The PromQL the repository ships — the alert rules and the Grafana
//! dashboard in `cluster-config/` — read out of its files, checked to parse
//! (by `promtool`, the parser Prometheus itself uses) and reduced to the
//! metric names it reads, so a test can compare them with what the nodes
//! export.
//!
//! Why a name check and not only a parse check: an expression over a
//! misspelt or renamed metric parses, evaluates to nothing, and an alert
//! over it never fires, a panel stays empty; nobody notices until the
//! outage it was meant to show.
//!
//! The name extraction is a small tokenizer, not a PromQL parser: the
//! expressions are first parsed by `promtool`, so it only needs to tell
//! metric names from function names, keywords, label names (inside `{}`
//! and after `by`/`without`/`on`/`ignoring`/`group_*`), strings, numbers
//! and durations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One expression and where it came from (`alert RelayNoLeader`,
/// `panel "Queue depth" A`, ...), for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expression {
    /// Where it is.
    pub origin: String,
    /// PromQL, Grafana variables already replaced.
    pub expr: String,
}

/// The shipped alert rules.
pub fn alert_rules_path() -> PathBuf {
    crate::compose::repo_root().join("cluster-config/prometheus/relay-alerts.yml")
}

/// The shipped alert rules' unit tests (`promtool test rules`).
pub fn alert_tests_path() -> PathBuf {
    crate::compose::repo_root().join("cluster-config/prometheus/relay-alerts.test.yml")
}

/// The shipped Grafana dashboard.
pub fn dashboard_path() -> PathBuf {
    crate::compose::repo_root().join("cluster-config/grafana/quorum-relay.json")
}

/// Metrics Prometheus makes itself for every scrape target; the rules may
/// use them although no node exports them.
pub const SCRAPE_METRICS: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// The `expr` of every rule (`alert:` or `record:`) in a Prometheus rules
/// file. A small reader for the YAML these files use (plain, quoted and
/// `>`/`|` block scalars); it fails when the number of expressions differs
/// from the number of rules, so a form it does not understand cannot be
/// skipped silently.
pub fn rule_expressions(yaml: &str) -> anyhow::Result<Vec<Expression>> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut rules = 0;
    let mut name = String::from("?");
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        let indent = line.len() - line.trim_start().len();
        i += 1;
        if let Some(rest) = trimmed
            .strip_prefix("alert:")
            .or_else(|| trimmed.strip_prefix("record:"))
        {
            rules += 1;
            name = rest.trim().to_string();
            continue;
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        // Continuation lines: indented deeper than the `expr:` key.
        let mut more = Vec::new();
        while i < lines.len() {
            let next = lines[i];
            let next_indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && next_indent <= indent {
                break;
            }
            more.push(next.trim());
            i += 1;
        }
        let expr = if value.starts_with('>') || value.starts_with('|') {
            more.join(" ")
        } else if value.starts_with('"') {
            serde_json::from_str::<String>(value)
                .with_context(|| format!("rule {name}: cannot read the quoted expr {value}"))?
        } else if let Some(single) = value.strip_prefix('\'') {
            single
                .strip_suffix('\'')
                .with_context(|| format!("rule {name}: unterminated expr {value}"))?
                .replace("''", "'")
        } else {
            std::iter::once(value)
                .chain(more.iter().copied())
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push(Expression {
            origin: format!("rule {name}"),
            expr: expr.trim().to_string(),
        });
    }
    if out.len() != rules {
        bail!(
            "found {} expr for {rules} rules: the rules file has a form this reader does not know",
            out.len()
        );
    }
    Ok(out)
}

/// What each Grafana variable the dashboard uses stands for when checking:
/// the tier selector matches everything, intervals are fixed durations.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("tier", ".*"),
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1h"),
];

/// Replaces `$name` and `${name}`; an unknown variable is an error.
fn substitute(origin: &str, expr: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .with_context(|| format!("{origin}: unterminated ${{ in {expr}"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = GRAFANA_VARIABLES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .with_context(|| format!("{origin}: unknown Grafana variable ${name} in {expr}"))?;
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Every PromQL expression of a Grafana dashboard: each panel's targets
/// (rows' nested panels included) and each query variable's
/// `label_values(<selector>, label)` selector. Fails on a panel without
/// targets (it would show nothing) and on a target without `expr`.
pub fn dashboard_expressions(json: &str) -> anyhow::Result<Vec<Expression>> {
    let dashboard: serde_json::Value =
        serde_json::from_str(json).context("the dashboard is not JSON")?;
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for panel in dashboard["panels"]
        .as_array()
        .context("the dashboard has no panels")?
    {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            bail!("panel {title:?} has no targets");
        }
        for target in targets {
            let ref_id = target["refId"].as_str().unwrap_or("?");
            let origin = format!("panel {title:?} target {ref_id}");
            let expr = target["expr"]
                .as_str()
                .with_context(|| format!("{origin} has no expr"))?;
            out.push(Expression {
                expr: substitute(&origin, expr)?,
                origin,
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let origin = format!("variable ${name}");
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .with_context(|| format!("{origin} has no query"))?;
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .with_context(|| format!("{origin}: expected label_values(<selector>, <label>)"))?;
        out.push(Expression {
            expr: substitute(&origin, selector)?,
            origin,
        });
    }
    Ok(out)
}

/// A rules file that records each expression, for `promtool check rules`
/// (which parses every `expr`). Rule names are `check:<n>`.
pub fn as_recording_rules(expressions: &[Expression]) -> String {
    let mut yaml = String::from("groups:\n  - name: shipped-expressions\n    rules:\n");
    for (n, e) in expressions.iter().enumerate() {
        // JSON strings are valid YAML double-quoted scalars.
        let quoted = serde_json::to_string(&e.expr).expect("a string serializes");
        yaml.push_str(&format!(
            "      - record: check:{n}\n        expr: {quoted}\n"
        ));
    }
    yaml
}

/// `promtool`, if installed (`scripts/setup.sh` installs it for tests).
pub fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
}

/// Runs `promtool <args>`; its output on failure.
pub fn run_promtool(promtool: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(promtool)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", promtool.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!(
            "promtool {} failed ({}):\n{text}",
            args.join(" "),
            output.status
        );
    }
    Ok(text)
}

/// Words that are not metric names where a name could stand: PromQL
/// keywords and literals. (Functions and aggregations are told apart by
/// the `(` that follows them.)
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression reads: identifiers in value position,
/// and `__name__="..."` matchers.
pub fn metric_names(expr: &str) -> anyhow::Result<BTreeSet<String>> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_spaces = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = end_of_string(&chars, i)?,
            '{' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| i + p)
                    .with_context(|| format!("unterminated {{ in {expr}"))?;
                let matchers: String = chars[i + 1..end].iter().collect();
                if let Some(name) = name_matcher(&matchers) {
                    names.insert(name);
                }
                i = end + 1;
            }
            '[' => {
                i = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .map(|p| i + p + 1)
                    .with_context(|| format!("unterminated [ in {expr}"))?;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations (`5m`, `1e3`, `0x1f`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = skip_spaces(i);
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if chars.get(next) == Some(&'(') {
                        i = chars[next..]
                            .iter()
                            .position(|&c| c == ')')
                            .map(|p| next + p + 1)
                            .with_context(|| format!("unterminated label list in {expr}"))?;
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || chars.get(next) == Some(&'(')
                    || followed_by_grouping(&chars[next..])
                {
                    // A keyword, a function call, or an aggregation
                    // (`sum(...)`, `sum by (x) (...)`).
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

/// Whether `rest` starts with `by` or `without` and then `(`: the
/// identifier before it is an aggregation, not a metric.
fn followed_by_grouping(rest: &[char]) -> bool {
    let word: String = rest
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    (word == "by" || word == "without")
        && rest[word.len()..]
            .iter()
            .find(|c| !c.is_whitespace())
            .is_some_and(|&c| c == '(')
}

/// `__name__="x"` inside a matcher list.
fn name_matcher(matchers: &str) -> Option<String> {
    let (_, rest) = matchers.split_once("__name__")?;
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next()?;
    let body = &rest[1..];
    Some(body[..body.find(quote)?].to_string())
}

/// Index just after the string literal starting at `start`.
fn end_of_string(chars: &[char], start: usize) -> anyhow::Result<usize> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return Ok(i + 1);
        }
        i += 1;
    }
    bail!("unterminated string literal")
}

/// The series names on a Prometheus text page (`name` of `name{...} v`;
/// histograms show as `_bucket`, `_sum` and `_count`).
pub fn exported_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Each expression's metric names that are neither in `exported` nor made
/// by Prometheus: `(origin, name)` pairs, empty when all is well.
pub fn unknown_names(
    expressions: &[Expression],
    exported: &BTreeSet<String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut unknown = Vec::new();
    for e in expressions {
        for name in metric_names(&e.expr).with_context(|| e.origin.clone())? {
            if !exported.contains(&name) && !SCRAPE_METRICS.contains(&name.as_str()) {
                unknown.push((e.origin.clone(), name));
            }
        }
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).unwrap().into_iter().collect()
    }

    #[test]
    fn metric_names_skip_functions_keywords_labels_strings_and_durations() {
        assert_eq!(
            names(
                r#"sum by (tier, peer) (rate(relay_a_total{job="relay",x=~"a|b"}[5m] offset 1h)) > 0.5"#
            ),
            ["relay_a_total"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / on (instance) group_left (node) y"
            ),
            ["x_bucket", "y"]
        );
        assert_eq!(
            names("(sum(up) < 2) or absent(up{job=\"relay\"}) unless z == bool 1"),
            ["up", "z"]
        );
        assert_eq!(names("sum(a) without (b) + {__name__=\"c\"}"), ["a", "c"]);
        assert_eq!(names("topk(5, a) and count_values(\"v\", b)"), ["a", "b"]);
        assert_eq!(names("max_over_time(a[1h:1m]) * 1e3 + 0x1f"), ["a"]);
    }

    #[test]
    fn rule_expressions_read_plain_quoted_and_folded_scalars() {
        let yaml = [
            "groups:",
            "  - name: g",
            "    rules:",
            "      - alert: A",
            "        expr: up == 0",
            "        for: 1m",
            "      - alert: B",
            "        expr: >",
            "          sum(a)",
            "          / sum(b) > 0.5",
            "        labels:",
            "          x: y",
            "      - record: c:r",
            "        expr: \"rate(c[5m])\"",
        ]
        .join("\n");
        let exprs = rule_expressions(&yaml).unwrap();
        let got: Vec<(&str, &str)> = exprs
            .iter()
            .map(|e| (e.origin.as_str(), e.expr.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("rule A", "up == 0"),
                ("rule B", "sum(a) / sum(b) > 0.5"),
                ("rule c:r", "rate(c[5m])"),
            ]
        );
        // A rule whose expr the reader cannot see is an error, not a skip.
        assert!(rule_expressions("- alert: A\n  expression: up\n").is_err());
    }

    #[test]
    fn grafana_variables_are_replaced_and_unknown_ones_refused() {
        assert_eq!(
            substitute("t", "rate(a{tier=~\"$tier\"}[$__rate_interval])").unwrap(),
            "rate(a{tier=~\".*\"}[5m])"
        );
        assert_eq!(substitute("t", "a[${__range}]").unwrap(), "a[1h]");
        assert!(substitute("t", "a{x=\"$nope\"}").is_err());
    }

    #[test]
    fn an_unknown_metric_in_a_dashboard_is_reported_with_its_panel() {
        let dashboard = r#"{"panels": [
            {"type": "row", "title": "r", "panels": []},
            {"type": "timeseries", "title": "Queue", "targets": [
                {"refId": "A", "expr": "max(relay_queue_messages{tier=~\"$tier\"})"},
                {"refId": "B", "expr": "sum(rate(relay_queue_mesages_total[$__rate_interval]))"}]}],
            "templating": {"list": [{"type": "query", "name": "tier",
                "query": {"query": "label_values(up{job=\"relay\"}, tier)"}}]}}"#;
        let exprs = dashboard_expressions(dashboard).unwrap();
        assert_eq!(exprs.len(), 3);
        let exported: BTreeSet<String> = ["relay_queue_messages".to_string()].into();
        let unknown = unknown_names(&exprs, &exported).unwrap();
        assert_eq!(
            unknown,
            [(
                "panel \"Queue\" target B".to_string(),
                "relay_queue_mesages_total".to_string()
            )]
        );
        let empty_panel = r#"{"panels": [{"type": "stat", "title": "Nothing", "targets": []}]}"#;
        assert!(dashboard_expressions(empty_panel).is_err());
    }

    #[test]
    fn exported_names_are_series_names() {
        let page = "# HELP a_seconds x\n# TYPE a_seconds histogram\na_seconds_bucket{le=\"1\"} 0\n\
                    a_seconds_sum 0\na_seconds_count 0\nb_total{x=\"y\"} 3\nc 1\n";
        let got: Vec<String> = exported_names(page).into_iter().collect();
        assert_eq!(
            got,
            [
                "a_seconds_bucket",
                "a_seconds_count",
                "a_seconds_sum",
                "b_total",
                "c"
            ]
        );
    }
}
