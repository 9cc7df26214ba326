//! A small JavaScript tokenizer: just enough of the lexical grammar to find `export`, `import`
//! and `require` outside strings, comments, templates and regular expressions, to read the
//! `meta` literal, and to see whether brackets balance.
//!
//! It is not a parser. The one ambiguity JavaScript's lexical grammar has (is `/` a division or
//! the start of a regular expression?) is settled by the usual rule of thumb on the previous
//! token; QuickJS remains the authority on syntax, so a lexical error found here is only a hint
//! (see [`crate::frontend`]), except for brackets nested past [`MAX_NESTING`], which QuickJS must
//! never see.

use std::fmt;

/// A position in the source: 1-based line and 1-based column in bytes, as QuickJS reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in UTF-8 bytes from the start of the line.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// An identifier or a keyword; its text is the token's source slice.
    Ident,
    /// A string literal, with its escapes decoded (`None` when an escape was malformed).
    Str(Option<String>),
    /// A template literal up to its end or its first `${`. `cooked` is its decoded text when it
    /// has no substitution.
    Template {
        /// The decoded text of a template without substitutions.
        cooked: Option<String>,
        /// Whether a `${` follows.
        has_substitution: bool,
    },
    /// The part of a template after a substitution's closing `}`.
    TemplateRest,
    /// A numeric literal (`None` for forms this tokenizer does not evaluate, such as BigInts).
    Number(Option<f64>),
    /// A regular-expression literal.
    Regex,
    /// A punctuator; its text is the token's source slice.
    Punct,
}

/// One token: its kind, its byte range in the source and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// What the token is.
    pub kind: Kind,
    /// Byte offset of its first character.
    pub start: usize,
    /// Byte offset just past its last character.
    pub end: usize,
    /// Where it starts.
    pub pos: Pos,
    /// Whether a line break separates it from the previous token.
    pub newline_before: bool,
}

impl Token {
    /// The token's source text.
    pub fn text<'s>(&self, source: &'s str) -> &'s str {
        &source[self.start..self.end]
    }

    /// Whether this is the punctuator `p`.
    pub fn is_punct(&self, source: &str, p: &str) -> bool {
        self.kind == Kind::Punct && self.text(source) == p
    }

    /// Whether this is the identifier or keyword `name`.
    pub fn is_ident(&self, source: &str, name: &str) -> bool {
        self.kind == Kind::Ident && self.text(source) == name
    }
}

/// How deep a script may nest: open brackets (`(`, `[`, `{` and template `${`) plus the prefix
/// operators (`!`, `~`, `+`, `-`, `++`, `--`, `typeof`, `void`, `delete`, `await`) and the `**`
/// written in a row before each of them and at the innermost level.
///
/// QuickJS parses each of these by recursion in C, on wasm32 about 2 KiB of native stack per
/// bracket and 200 bytes per operator, and almost none of it on the shadow stack its overflow
/// check watches: past ~200 brackets (or ~3000 operators) a script would end the run with an
/// uncatchable "call stack exhausted" trap while it compiles. Real code nests a few dozen levels
/// at most.
pub const MAX_NESTING: usize = 100;

/// Punctuators that QuickJS's parser meets by recursion when they follow one another: the
/// prefix operators. (`**`, right-associative, recurses too, with operands in between.)
const CHAINED_PUNCTUATORS: &[&str] = &["!", "~", "+", "-", "++", "--"];
/// Keywords that are prefix operators.
const CHAINED_KEYWORDS: &[&str] = &["typeof", "void", "delete", "await"];

/// A lexical error: an unterminated literal or comment, or brackets that do not balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong, and how to fix it.
    pub message: String,
    /// Whether the script must be refused for it, rather than the error kept as a hint.
    pub refused: bool,
}

/// The result of tokenizing: every token up to the end, or up to the first error.
#[derive(Debug)]
pub struct Lexed {
    /// The tokens read.
    pub tokens: Vec<Token>,
    /// The error that stopped tokenizing, if any.
    pub error: Option<LexError>,
}

/// Tokenizes `source`.
pub fn tokenize(source: &str) -> Lexed {
    let mut lexer = Lexer {
        src: source,
        i: 0,
        pos: Pos { line: 1, column: 1 },
        open: Vec::new(),
        chains: Vec::new(),
        chain: 0,
        power: 0,
        tokens: Vec::new(),
        newline: false,
    };
    let error = lexer.run().err();
    Lexed {
        tokens: lexer.tokens,
        error,
    }
}

/// The position of byte `offset` of `source`, counted as the tokenizer (and QuickJS) counts.
pub fn position(source: &str, offset: usize) -> Pos {
    let mut pos = Pos { line: 1, column: 1 };
    let mut chars = source[..offset.min(source.len())].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() == Some(&'\n') {
            continue;
        }
        if is_line_terminator(c) {
            pos.line += 1;
            pos.column = 1;
        } else {
            pos.column += c.len_utf8() as u32;
        }
    }
    pos
}

/// An open bracket, or an open template substitution (`${`).
#[derive(Clone, Copy)]
enum Open {
    Brace(Pos),
    Paren(Pos),
    Bracket(Pos),
    Substitution(Pos),
}

/// Punctuators of more than one character, longest first so that the first match is the longest.
const LONG_PUNCTUATORS: &[&str] = &[
    ">>>=", "...", "===", "!==", "**=", "<<=", ">>=", ">>>", "&&=", "||=", "??=", "=>", "==", "!=",
    "<=", ">=", "&&", "||", "??", "?.", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=",
    "<<", ">>", "**",
];

/// Keywords after which a `/` starts a regular expression rather than a division.
const REGEX_AFTER_KEYWORDS: &[&str] = &[
    "return",
    "typeof",
    "instanceof",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "case",
    "do",
    "else",
    "yield",
    "await",
];

struct Lexer<'s> {
    src: &'s str,
    i: usize,
    pos: Pos,
    open: Vec<Open>,
    /// For each open bracket, the operator chain written just before it (see [`MAX_NESTING`]),
    /// and their sum.
    chains: Vec<usize>,
    /// The prefix operators in a row at the innermost level so far.
    chain: usize,
    /// The `**` in a row (with their operands) at the innermost level so far.
    power: usize,
    tokens: Vec<Token>,
    newline: bool,
}

type LexResult<T> = Result<T, LexError>;

fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

fn is_ident_start(c: char) -> bool {
    c == '$' || c == '_' || c == '\\' || c.is_alphabetic()
}

fn is_ident_part(c: char) -> bool {
    is_ident_start(c) || c.is_alphanumeric() || c == '\u{200c}' || c == '\u{200d}'
}

impl<'s> Lexer<'s> {
    fn peek(&self) -> Option<char> {
        self.src[self.i..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.i..].chars().nth(n)
    }

    fn rest(&self) -> &'s str {
        &self.src[self.i..]
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        let crlf = c == '\r' && self.peek() == Some('\n');
        if is_line_terminator(c) && !crlf {
            self.pos.line += 1;
            self.pos.column = 1;
        } else if !is_line_terminator(c) {
            self.pos.column += c.len_utf8() as u32;
        }
        Some(c)
    }

    fn error<T>(&self, pos: Pos, message: impl Into<String>) -> LexResult<T> {
        Err(LexError {
            pos,
            message: message.into(),
            refused: false,
        })
    }

    /// How deep the parser will be nested here (see [`MAX_NESTING`]).
    fn nesting(&self) -> usize {
        self.open.len() + self.chains.iter().sum::<usize>() + self.chain + self.power
    }

    /// Refuses the script when it nests past [`MAX_NESTING`] at `pos`.
    fn check_nesting(&self, pos: Pos) -> LexResult<()> {
        if self.nesting() <= MAX_NESTING {
            return Ok(());
        }
        Err(LexError {
            pos,
            message: format!(
                "brackets and prefix operators nest more than {MAX_NESTING} deep here, the most \
                 the workflow runtime compiles (MAX_NESTING): give inner parts names (variables \
                 or functions), or keep deep data in a JSON string and JSON.parse it"
            ),
            refused: true,
        })
    }

    /// Records an open bracket, refusing the script past [`MAX_NESTING`].
    fn open_bracket(&mut self, open: Open, pos: Pos) -> LexResult<()> {
        self.open.push(open);
        let before = std::mem::take(&mut self.chain) + std::mem::take(&mut self.power);
        self.chains.push(before);
        self.check_nesting(pos)
    }

    /// Forgets the innermost open bracket.
    fn close_bracket(&mut self) -> Option<Open> {
        self.chains.pop();
        self.chain = 0;
        self.power = 0;
        self.open.pop()
    }

    fn push(&mut self, kind: Kind, start: usize, pos: Pos) {
        let text = &self.src[start..self.i];
        let (chained, power, operand) = match kind {
            Kind::Punct => (
                CHAINED_PUNCTUATORS.contains(&text),
                text == "**",
                matches!(text, ")" | "]" | "}"),
            ),
            Kind::Ident => (CHAINED_KEYWORDS.contains(&text), false, true),
            _ => (false, false, true),
        };
        // An opening bracket has just moved the chains before it into `chains`.
        self.chain = if chained { self.chain + 1 } else { 0 };
        self.power = if power {
            self.power + 1
        } else if operand {
            self.power
        } else {
            0
        };
        self.tokens.push(Token {
            kind,
            start,
            end: self.i,
            pos,
            newline_before: self.newline,
        });
        self.newline = false;
    }

    fn run(&mut self) -> LexResult<()> {
        if self.rest().starts_with("#!") {
            self.skip_line();
        }
        loop {
            self.skip_trivia()?;
            let Some(c) = self.peek() else { break };
            let (start, pos) = (self.i, self.pos);
            match c {
                c if is_ident_start(c) => {
                    while self.peek().is_some_and(is_ident_part) {
                        // `\uXXXX` escapes in identifiers: skip the escape's `u` with the backslash.
                        if self.bump() == Some('\\') && self.peek() == Some('u') {
                            self.bump();
                        }
                    }
                    self.push(Kind::Ident, start, pos);
                    self.check_nesting(pos)?;
                }
                '0'..='9' => self.number(start, pos),
                '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => {
                    self.number(start, pos)
                }
                '"' | '\'' => {
                    let value = self.string(c, pos)?;
                    self.push(Kind::Str(value), start, pos);
                }
                '`' => {
                    self.bump();
                    self.template(start, pos, false)?;
                }
                '/' if self.regex_allowed() => self.regex(start, pos)?,
                '{' | '(' | '[' => {
                    self.bump();
                    self.open_bracket(
                        match c {
                            '{' => Open::Brace(pos),
                            '(' => Open::Paren(pos),
                            _ => Open::Bracket(pos),
                        },
                        pos,
                    )?;
                    self.push(Kind::Punct, start, pos);
                }
                '}' if matches!(self.open.last(), Some(Open::Substitution(_))) => {
                    self.close_bracket();
                    self.bump();
                    self.template(start, pos, true)?;
                }
                '}' | ')' | ']' => {
                    self.close(c, pos)?;
                    self.bump();
                    self.push(Kind::Punct, start, pos);
                }
                _ => {
                    let rest = self.rest();
                    let len = LONG_PUNCTUATORS
                        .iter()
                        .find(|p| rest.starts_with(**p))
                        // `?.` followed by a digit is `?` then a number (`a?.5:b`).
                        .filter(|p| {
                            **p != "?." || !rest[2..].starts_with(|d: char| d.is_ascii_digit())
                        })
                        .map_or(1, |p| p.chars().count());
                    for _ in 0..len {
                        self.bump();
                    }
                    self.push(Kind::Punct, start, pos);
                    self.check_nesting(pos)?;
                }
            }
        }
        match self.open.last() {
            None => Ok(()),
            Some(Open::Brace(p)) => self.error(*p, "this `{` is never closed: add the missing `}`"),
            Some(Open::Paren(p)) => self.error(*p, "this `(` is never closed: add the missing `)`"),
            Some(Open::Bracket(p)) => {
                self.error(*p, "this `[` is never closed: add the missing `]`")
            }
            Some(Open::Substitution(p)) => self.error(
                *p,
                "this template substitution `${` is never closed: add the missing `}`",
            ),
        }
    }

    fn close(&mut self, c: char, pos: Pos) -> LexResult<()> {
        let (opened, expected) = match self.close_bracket() {
            None => {
                return self.error(
                    pos,
                    format!("unmatched `{c}`: nothing is open here; remove it or add the opening bracket"),
                );
            }
            Some(Open::Brace(p)) => (p, '}'),
            Some(Open::Paren(p)) => (p, ')'),
            Some(Open::Bracket(p)) => (p, ']'),
            Some(Open::Substitution(p)) => (p, '}'),
        };
        if c == expected {
            Ok(())
        } else {
            self.error(
                pos,
                format!(
                    "`{c}` does not match the bracket opened at {opened}, which needs `{expected}`"
                ),
            )
        }
    }

    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| !is_line_terminator(c)) {
            self.bump();
        }
    }

    fn skip_trivia(&mut self) -> LexResult<()> {
        while let Some(c) = self.peek() {
            if is_line_terminator(c) {
                self.newline = true;
                self.bump();
            } else if c.is_whitespace() || c == '\u{feff}' {
                self.bump();
            } else if self.rest().starts_with("//") {
                self.skip_line();
            } else if self.rest().starts_with("/*") {
                let pos = self.pos;
                self.bump();
                self.bump();
                loop {
                    if self.rest().starts_with("*/") {
                        self.bump();
                        self.bump();
                        break;
                    }
                    match self.bump() {
                        None => return self.error(pos, "this comment is never closed: add `*/`"),
                        Some(c) if is_line_terminator(c) => self.newline = true,
                        Some(_) => {}
                    }
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Whether a `/` here starts a regular expression, judged by the previous token.
    fn regex_allowed(&self) -> bool {
        let Some(prev) = self.tokens.last() else {
            return true;
        };
        let text = prev.text(self.src);
        match prev.kind {
            Kind::Ident => REGEX_AFTER_KEYWORDS.contains(&text),
            Kind::Punct => !matches!(text, ")" | "]" | "}" | "++" | "--"),
            Kind::Template {
                has_substitution: true,
                ..
            } => true,
            _ => false,
        }
    }

    fn number(&mut self, start: usize, pos: Pos) {
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            let c = self.bump();
            // An exponent's sign belongs to the number.
            if matches!(c, Some('e' | 'E'))
                && !self.src[start..self.i].starts_with("0x")
                && !self.src[start..self.i].starts_with("0X")
                && matches!(self.peek(), Some('+' | '-'))
            {
                self.bump();
            }
        }
        let text = self.src[start..self.i].replace('_', "");
        let value = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).ok().map(|v| v as f64)
        } else if let Some(oct) = text.strip_prefix("0o").or_else(|| text.strip_prefix("0O")) {
            u64::from_str_radix(oct, 8).ok().map(|v| v as f64)
        } else if let Some(bin) = text.strip_prefix("0b").or_else(|| text.strip_prefix("0B")) {
            u64::from_str_radix(bin, 2).ok().map(|v| v as f64)
        } else {
            text.parse::<f64>().ok()
        };
        self.push(Kind::Number(value), start, pos);
    }

    /// Reads an escape sequence after its backslash, appending its value to `out`.
    fn escape(&mut self, out: &mut Option<String>) {
        let Some(c) = self.bump() else { return };
        let decoded = match c {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'v' => Some('\u{b}'),
            '0' if !self.peek().is_some_and(|d| d.is_ascii_digit()) => Some('\0'),
            'x' => self.hex_digits(2),
            'u' if self.peek() == Some('{') => {
                self.bump();
                let mut digits = String::new();
                while let Some(d) = self.peek().filter(|d| d.is_ascii_hexdigit()) {
                    digits.push(d);
                    self.bump();
                }
                let closed = self.peek() == Some('}');
                if closed {
                    self.bump();
                }
                u32::from_str_radix(&digits, 16)
                    .ok()
                    .filter(|_| closed)
                    .and_then(char::from_u32)
            }
            'u' => {
                let unit = self.hex_digits(4).map(u32::from);
                // A surrogate pair is two `\u` escapes.
                match unit {
                    Some(high @ 0xd800..=0xdbff) if self.rest().starts_with("\\u") => {
                        self.bump();
                        self.bump();
                        match self.hex_digits(4).map(u32::from) {
                            Some(low @ 0xdc00..=0xdfff) => {
                                char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00))
                            }
                            _ => None,
                        }
                    }
                    Some(unit) => char::from_u32(unit),
                    None => None,
                }
            }
            '\r' => {
                if self.peek() == Some('\n') {
                    self.bump();
                }
                return;
            }
            c if is_line_terminator(c) => return,
            '1'..='9' => None,
            c => Some(c),
        };
        match (out.as_mut(), decoded) {
            (Some(s), Some(c)) => s.push(c),
            _ => *out = None,
        }
    }

    fn hex_digits(&mut self, n: usize) -> Option<char> {
        let digits: String = self.rest().chars().take(n).collect();
        if digits.len() != n || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
            return None;
        }
        for _ in 0..n {
            self.bump();
        }
        u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
    }

    fn string(&mut self, quote: char, pos: Pos) -> LexResult<Option<String>> {
        self.bump();
        let mut value = Some(String::new());
        loop {
            match self.peek() {
                None => {
                    return self.error(pos, format!("this string is never closed: add `{quote}`"));
                }
                Some(c) if c == '\n' || c == '\r' => {
                    return self.error(
                        pos,
                        format!(
                            "this string is never closed on its line: add `{quote}`, or use a \
                             template literal (`...`) for text over several lines"
                        ),
                    );
                }
                Some('\\') => {
                    self.bump();
                    self.escape(&mut value);
                }
                Some(c) => {
                    self.bump();
                    if c == quote {
                        return Ok(value);
                    }
                    if let Some(v) = value.as_mut() {
                        v.push(c);
                    }
                }
            }
        }
    }

    /// Reads a template from after its opening backtick (or after a substitution's `}`) up to its
    /// closing backtick or its next `${`.
    fn template(&mut self, start: usize, pos: Pos, continuation: bool) -> LexResult<()> {
        let mut cooked = Some(String::new());
        loop {
            match self.peek() {
                None => {
                    return self
                        .error(pos, "this template literal is never closed: add a backtick");
                }
                Some('`') => {
                    self.bump();
                    let kind = if continuation {
                        Kind::TemplateRest
                    } else {
                        Kind::Template {
                            cooked,
                            has_substitution: false,
                        }
                    };
                    self.push(kind, start, pos);
                    return Ok(());
                }
                Some('$') if self.peek_at(1) == Some('{') => {
                    let subst = self.pos;
                    self.bump();
                    self.bump();
                    self.open_bracket(Open::Substitution(subst), subst)?;
                    let kind = if continuation {
                        Kind::TemplateRest
                    } else {
                        Kind::Template {
                            cooked: None,
                            has_substitution: true,
                        }
                    };
                    self.push(kind, start, pos);
                    return Ok(());
                }
                Some('\\') => {
                    self.bump();
                    self.escape(&mut cooked);
                }
                Some(c) => {
                    self.bump();
                    if let Some(v) = cooked.as_mut() {
                        // Template text normalises CRLF and CR to LF.
                        if c == '\r' {
                            if self.peek() == Some('\n') {
                                self.bump();
                            }
                            v.push('\n');
                        } else {
                            v.push(c);
                        }
                    }
                }
            }
        }
    }

    fn regex(&mut self, start: usize, pos: Pos) -> LexResult<()> {
        self.bump();
        let mut in_class = false;
        loop {
            match self.bump() {
                None => return self.error(pos, "this regular expression is never closed: add `/`"),
                Some(c) if is_line_terminator(c) => {
                    return self.error(
                        pos,
                        "this regular expression is never closed on its line: add `/`",
                    );
                }
                Some('\\') => {
                    if self.peek().is_some_and(|c| !is_line_terminator(c)) {
                        self.bump();
                    }
                }
                Some('[') => in_class = true,
                Some(']') => in_class = false,
                Some('/') if !in_class => break,
                Some(_) => {}
            }
        }
        while self.peek().is_some_and(is_ident_part) {
            self.bump();
        }
        self.push(Kind::Regex, start, pos);
        Ok(())
    }
}
