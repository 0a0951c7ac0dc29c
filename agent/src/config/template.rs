//! The command template engine: `{runtime}`, `{node}`, `{jdbc}` and
//! `{appdata}` in a configured argv, checked at load and filled at start.

/// Placeholders a command template may hold.
pub const PLACEHOLDERS: &[&str] = &["runtime", "node", "jdbc", "appdata"];

/// Values for a template.
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    /// Resolved runtime directory.
    pub runtime: &'a str,
    /// HA node name.
    pub node: &'a str,
    /// JDBC URI (secret).
    pub jdbc: &'a str,
    /// appdata directory.
    pub appdata: &'a str,
}

/// One piece of a parsed template.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into text and `{placeholder}` pieces; `{{` and `}}`
/// are literal braces. Errors name the bad placeholder.
fn parse_template(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{{") {
            pieces.push(Piece::Text("{"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            pieces.push(Piece::Text("}"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
            let name = &r[..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}} in {t:?} (known: {{runtime}}, {{node}}, {{jdbc}}, {{appdata}})"
                ));
            }
            pieces.push(Piece::Var(name));
            rest = &r[end + 1..];
        } else if rest.starts_with('}') {
            return Err(format!(
                "unmatched '}}' in {t:?} (write '}}}}' for a literal brace)"
            ));
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len());
            pieces.push(Piece::Text(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(pieces)
}

/// Checks one template string.
pub fn check_template(t: &str) -> Result<(), String> {
    parse_template(t).map(|_| ())
}

/// Fills one template string (already validated at load time).
pub fn fill(t: &str, vars: Vars<'_>) -> String {
    let Ok(pieces) = parse_template(t) else {
        return t.to_string();
    };
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(s) => out.push_str(s),
            Piece::Var("runtime") => out.push_str(vars.runtime),
            Piece::Var("node") => out.push_str(vars.node),
            Piece::Var("jdbc") => out.push_str(vars.jdbc),
            Piece::Var("appdata") => out.push_str(vars.appdata),
            Piece::Var(_) => {}
        }
    }
    out
}

/// Fills an argv template.
pub fn fill_argv(argv: &[String], vars: Vars<'_>) -> Vec<String> {
    argv.iter().map(|a| fill(a, vars)).collect()
}

/// Whether the template uses `{name}`.
pub fn uses(argv: &[String], name: &str) -> bool {
    argv.iter().any(|a| {
        parse_template(a)
            .map(|p| p.iter().any(|p| matches!(p, Piece::Var(n) if *n == name)))
            .unwrap_or(false)
    })
}
