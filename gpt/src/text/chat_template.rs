//! Chat templates: the Jinja2 template a model's `tokenizer_config.json` carries (`chat_template`)
//! rendered with minijinja the way transformers' `apply_chat_template` renders it — trim_blocks,
//! lstrip_blocks, loop controls, Python's string methods, `raise_exception`, `strftime_now` and a
//! `tojson` that writes what Python's `json.dumps` writes.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde};
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

use crate::error::{GptError, Result};

/// One turn of a conversation (`{"role": "user", "content": "..."}`); other keys (tool calls,
/// reasoning) are passed through to the template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_string(), content: content.to_string(), extra: serde_json::Map::new() }
    }
}

/// A compiled chat template and the special-token texts it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Checks that `source` compiles; `origin` (a file) names it in errors.
    pub fn new(source: String, bos_token: String, eos_token: String, origin: &str) -> Result<Self> {
        let template = Self { source, bos_token, eos_token };
        let mut env = environment();
        env.add_template(NAME, &template.source).map_err(|e| GptError::Tokenizer(format!("{origin}: the chat template does not compile: {e}")))?;
        Ok(template)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The conversation as the model was trained to read it; with `add_generation_prompt`, the
    /// start of an assistant turn follows.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut env = environment();
        env.add_template(NAME, &self.source).map_err(|e| GptError::Tokenizer(format!("chat template: {e}")))?;
        let template = env.get_template(NAME).map_err(|e| GptError::Tokenizer(format!("chat template: {e}")))?;
        let context = context! {
            messages => Value::from(Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        };
        template.render(context).map_err(|e| GptError::Tokenizer(format!("rendering the chat template: {}", describe(&e))))
    }
}

/// minijinja's error with its cause chain (a `raise_exception` message is in the error itself).
fn describe(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// transformers renders with `jinja2.Environment(trim_blocks=True, lstrip_blocks=True,
/// extensions=[loopcontrols])` and adds `raise_exception`, `strftime_now` and its own `tojson`.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    if let Ok(syntax) = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build() {
        env.set_syntax(syntax);
    }
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> std::result::Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_function("strftime_now", |format: String| strftime(&format, std::time::SystemTime::now()));
    env.add_filter("tojson", tojson);
    env
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` and `": "` between
/// items without an indent (minijinja's own `tojson` is compact and escapes HTML characters).
fn tojson(value: Value, indent: Option<usize>, kwargs: Kwargs) -> std::result::Result<String, Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    // Serialised straight from the template's value, so that maps keep their order.
    let json = value;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = vec![b' '; n];
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(&spaces));
            json.serialize(&mut serializer)
        }
        None => json.serialize(&mut serde_json::Serializer::with_formatter(&mut out, PythonFormatter)),
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    String::from_utf8(out).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// serde_json's compact output with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// C's `strftime` for the directives chat templates use (`%d %b %Y` in Llama 3.1's), in UTC.
pub fn strftime(format: &str, time: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let secs = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('-') if chars.clone().next() == Some('d') => {
                chars.next();
                out.push_str(&day.to_string());
            }
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('A') => out.push_str(DAYS[days.rem_euclid(7) as usize]),
            Some('a') => out.push_str(&DAYS[days.rem_euclid(7) as usize][..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_dates_as_c_does() {
        // 2024-07-26 12:34:56 UTC, a Friday (Llama 3.1's template's example date).
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_721_997_296);
        assert_eq!(strftime("%d %b %Y", time), "26 Jul 2024");
        assert_eq!(strftime("%A %B %-d, %y %H:%M:%S %%", time), "Friday July 26, 24 12:34:56 %");
        assert_eq!(strftime("%d %b %Y", std::time::UNIX_EPOCH), "01 Jan 1970");
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        // As templates call it, on a dict literal (whose keys keep their order, as in Python).
        let render = |source: &str| environment().render_str(source, ()).unwrap();
        assert_eq!(render(r#"{{ {"name": "f", "args": [1, "é<&>"]} | tojson }}"#), r#"{"name": "f", "args": [1, "é<&>"]}"#);
        assert_eq!(
            render(r#"{{ {"name": "f", "args": [1, "é<&>"]} | tojson(indent=2) }}"#),
            "{\n  \"name\": \"f\",\n  \"args\": [\n    1,\n    \"é<&>\"\n  ]\n}"
        );
    }

    #[test]
    fn templates_can_raise_and_use_python_methods() {
        let template = ChatTemplate::new(
            "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}\
             {{ bos_token }}{{ m.content.strip() | upper }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
                .into(),
            "<s>".into(),
            "</s>".into(),
            "test",
        )
        .unwrap();
        assert_eq!(template.render(&[ChatMessage::new("user", "  hi ")], true).unwrap(), "<s>HI>");
        let err = template.render(&[ChatMessage::new("tool", "x")], false).unwrap_err().to_string();
        assert!(err.contains("bad role tool"), "{err}");
        let err = ChatTemplate::new("{% for %}".into(), String::new(), String::new(), "cfg.json").unwrap_err().to_string();
        assert!(err.contains("cfg.json") && err.contains("does not compile"), "{err}");
    }
}
