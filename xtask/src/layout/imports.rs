//! The module paths a Rust source file names, read well enough for the import guard: every
//! `use` tree (nested groups, `self`, globs, renames), and every path in the code that
//! starts at `crate::`, `super::`, `self::` or at a child module, resolved from the module
//! it appears in (inline `mod name { ... }` blocks included). Comments, strings and
//! character literals are skipped.

/// A token of the source, as far as paths need it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    /// `::`
    Sep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other(char),
}

/// The tokens of `text`, without comments, strings and character literals.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1, None);
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character literal: up to its closing quote.
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime or a label: its name follows as an identifier.
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // Raw and byte strings: r"..", r#".."#, b"..", br".." (c"..", cr"..").
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
            if raw && at(i + hashes) == '"' {
                i = skip_string(&chars, i + hashes + 1, Some(hashes));
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_string(&chars, i + 1, None);
            } else if word == "b" && at(i) == '\'' {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            } else {
                out.push(Token::Ident(word));
            }
        } else {
            out.push(match c {
                ':' if at(i + 1) == ':' => {
                    i += 1;
                    Token::Sep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                ';' => Token::Semi,
                '*' => Token::Star,
                other => Token::Other(other),
            });
            i += 1;
        }
    }
    out
}

/// The index after a string's closing quote (followed by its `#`s for a raw string: `raw`
/// says how many), from `i`, just inside its opening quote. Only a plain string has
/// escapes.
fn skip_string(chars: &[char], mut i: usize, raw: Option<usize>) -> usize {
    let hashes = raw.unwrap_or(0);
    while i < chars.len() {
        match chars[i] {
            '\\' if raw.is_none() => i += 2,
            '"' if chars[i + 1..]
                .iter()
                .take(hashes)
                .filter(|c| **c == '#')
                .count()
                == hashes =>
            {
                return i + 1 + hashes;
            }
            _ => i += 1,
        }
    }
    i
}

/// A path as written: its segments, the first possibly `crate`, `super`, `self` or `::`.
type Written = Vec<String>;

/// The paths of a `use` tree starting at `tokens[*i]`, each below `prefix`, with the name
/// each is renamed to (`as`), if it is.
fn use_tree(
    tokens: &[Token],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Written, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    let mut alias = None;
    while let Some(token) = tokens.get(*i) {
        match token {
            Token::Ident(word) if word == "as" => {
                alias = match tokens.get(*i + 1) {
                    Some(Token::Ident(name)) => Some(name.clone()),
                    _ => Some("_".to_owned()),
                };
                *i += 2;
                break;
            }
            // `{self, ..}`: the group's prefix itself.
            Token::Ident(word) if word == "self" && !path.is_empty() => *i += 1,
            Token::Ident(word) => {
                path.push(word.clone());
                *i += 1;
            }
            Token::Sep if path.is_empty() => {
                path.push("::".to_owned());
                *i += 1;
            }
            Token::Sep => *i += 1,
            Token::Star => {
                *i += 1;
                alias = Some("*".to_owned());
                break;
            }
            Token::Open => {
                *i += 1;
                while *i < tokens.len() {
                    match tokens[*i] {
                        Token::Close => {
                            *i += 1;
                            return;
                        }
                        Token::Comma => *i += 1,
                        _ => use_tree(tokens, i, &path, out),
                    }
                }
                return;
            }
            _ => break,
        }
    }
    out.push((path, alias));
}

/// One path written in the code (not in a `use`), from `tokens[*i]`.
fn code_path(tokens: &[Token], i: &mut usize) -> Written {
    let mut path = Vec::new();
    while let Some(Token::Ident(word)) = tokens.get(*i) {
        path.push(word.clone());
        *i += 1;
        if tokens.get(*i) != Some(&Token::Sep) {
            break;
        }
        *i += 1;
    }
    path
}

/// What a file names.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// The module paths (from the crate root) it names. A path keeps every segment after
    /// the module it resolves to; the caller finds the longest prefix that is a module.
    pub(crate) paths: Vec<Vec<String>>,
    /// The names its own `use` items bind, with the paths they stand for (for an item
    /// another file reaches through this one, a re-export).
    pub(crate) bound: Vec<(String, Vec<String>)>,
}

/// What `text`, the file of module `module`, names. `is_module` says whether a path is a
/// module of the crate, to tell a child module's path from an external crate's.
pub(crate) fn named_paths(
    text: &str,
    module: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Names {
    let tokens = tokens(text);
    // Inline modules open here: their names, and the brace depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut found = Names::default();
    let mut i = 0;
    while i < tokens.len() {
        let here = || -> Vec<String> {
            let mut at = module.to_vec();
            at.extend(inline.iter().map(|(name, _)| name.clone()));
            at
        };
        let previous = i.checked_sub(1).map(|p| &tokens[p]);
        match &tokens[i] {
            Token::Open => {
                depth += 1;
                i += 1;
            }
            Token::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Token::Ident(word)
                if word == "mod"
                    && matches!(tokens.get(i + 1), Some(Token::Ident(_)))
                    && tokens.get(i + 2) == Some(&Token::Open) =>
            {
                if let Some(Token::Ident(name)) = tokens.get(i + 1) {
                    inline.push((name.clone(), depth + 1));
                }
                depth += 1;
                i += 3;
            }
            Token::Ident(word) if word == "use" => {
                i += 1;
                let mut written = Vec::new();
                use_tree(&tokens, &mut i, &[], &mut written);
                let at = here();
                for (path, alias) in written {
                    let Some(resolved) = resolve(&path, &at, is_module) else {
                        continue;
                    };
                    let name = alias.or_else(|| path.last().cloned());
                    if let Some(name) = name.filter(|_| inline.is_empty()) {
                        found.bound.push((name, resolved.clone()));
                    }
                    found.paths.push(resolved);
                }
            }
            // `pub(in path)` names an ancestor, not an import.
            Token::Ident(word) if word == "in" && previous == Some(&Token::Other('(')) => {
                i += 1;
                code_path(&tokens, &mut i);
            }
            Token::Ident(_)
                if tokens.get(i + 1) == Some(&Token::Sep)
                    && !matches!(previous, Some(Token::Sep)) =>
            {
                let written = code_path(&tokens, &mut i);
                found.paths.extend(resolve(&written, &here(), is_module));
            }
            _ => i += 1,
        }
    }
    found
}

/// A written path from the crate root, as seen from module `at`; `None` for an external
/// crate's path (or anything else that is not a module path of this crate).
fn resolve(
    written: &[String],
    at: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Option<Vec<String>> {
    let (first, rest) = written.split_first()?;
    let mut path = match first.as_str() {
        "crate" => Vec::new(),
        "self" => at.to_vec(),
        "super" => at[..at.len().checked_sub(1)?].to_vec(),
        "::" => return None,
        child => {
            // A child module of `at`, named without `self::` (else an external crate, a
            // type or a variable).
            let mut path = at.to_vec();
            path.push(child.to_owned());
            if !is_module(&path) {
                return None;
            }
            path.extend(rest.iter().cloned());
            return Some(path);
        }
    };
    for segment in rest {
        if segment == "super" {
            path.pop()?;
        } else {
            path.push(segment.clone());
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(text: &str, module: &[&str]) -> Vec<String> {
        let module: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
        let modules = ["a", "a::b", "a::c", "e", "f"];
        let is_module = |p: &[String]| modules.contains(&p.join("::").as_str());
        named_paths(text, &module, &is_module)
            .paths
            .iter()
            .map(|p| p.join("::"))
            .collect()
    }

    #[test]
    fn use_trees_expand_to_every_path() {
        assert_eq!(
            joined(
                "use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(); // crate::h\nlet s = \"crate::i\";",
                &[]
            ),
            ["a::b", "a::c::D", "e", "f::g"]
        );
        assert_eq!(
            joined(
                "pub use {crate::e::X, super::c::{self, Y as Z}, ::std::io};",
                &["a", "b"]
            ),
            ["e::X", "a::c", "a::c::Y"]
        );
        assert_eq!(
            joined("use std::{fmt, io::Write as _};", &[]),
            [] as [&str; 0]
        );
    }

    #[test]
    fn super_and_self_are_resolved_from_the_module_they_appear_in() {
        // In a::b: super is a, self is a::b.
        assert_eq!(
            joined(
                "use super::c::X; let y = self::d::e(); super::super::f::g();",
                &["a", "b"]
            ),
            ["a::c::X", "a::b::d::e", "f::g"]
        );
        // Inside `mod tests` of a::b, super is a::b itself.
        assert_eq!(
            joined(
                "mod tests { use super::*; use super::super::c; }\nuse super::c::Y;",
                &["a", "b"]
            ),
            ["a::b", "a::c", "a::c::Y"]
        );
        // A child module named without `self::`; a type's path and `pub(super)` are no paths.
        assert_eq!(
            joined("pub(super) fn f() { b::g(); Error::new(); }", &["a"]),
            ["a::b::g"]
        );
        assert_eq!(
            joined("pub(in crate::a) fn f() {}", &["a", "b"]),
            [] as [&str; 0]
        );
    }

    #[test]
    fn use_items_bind_names() {
        let is_module = |p: &[String]| p.join("::") == "a::b";
        let names = named_paths(
            "pub use b::{X, Y as Z, *};\nmod tests { use super::W; }",
            &["a".to_owned()],
            &is_module,
        );
        let bound: Vec<(String, String)> = names
            .bound
            .iter()
            .map(|(name, path)| (name.clone(), path.join("::")))
            .collect();
        let pair = |n: &str, p: &str| (n.to_owned(), p.to_owned());
        assert_eq!(
            bound,
            [
                pair("X", "a::b::X"),
                pair("Z", "a::b::Y"),
                pair("*", "a::b")
            ]
        );
    }

    #[test]
    fn literals_and_comments_hide_nothing_else() {
        let text = "let c = '\"'; let l: &'static str = r#\"crate::x\"#; /* crate::y /* z */ */ crate::e::f();";
        assert_eq!(joined(text, &[]), ["e::f"]);
    }
}
