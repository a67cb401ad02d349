//! One JSON object per line with MetalLB's keys (its `internal/logging`
//! uses go-kit's JSON logger): `level`, `ts` (RFC 3339, UTC), `caller`
//! (`file:line`), `msg`, then the event's own fields (`ip`, `service`,
//! `node`, `interface`, `event`, ...) as top-level keys.

use std::fmt;

use serde_json::{Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// The [`FormatEvent`] for `--log-format json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetalLbJson;

/// MetalLB's level names (go-kit's `level` package).
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// The keys every line starts with; an event field of the same name is
/// renamed so it cannot overwrite them.
const RESERVED: [&str; 4] = ["level", "ts", "caller", "msg"];

struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        // Events bridged from `log` carry their origin as `log.*` fields,
        // already used for `caller`.
        if name.starts_with("log.") {
            return;
        }
        let key = match name {
            "message" => "msg".to_owned(),
            reserved if RESERVED.contains(&reserved) => format!("field_{reserved}"),
            other => other.to_owned(),
        };
        self.0.insert(key, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

/// The JSON object for one event, `now` being its time.
pub(crate) fn line(event: &Event<'_>, now: OffsetDateTime) -> Map<String, Value> {
    let normalized = event.normalized_metadata();
    let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
    let mut object = Map::new();
    object.insert("level".into(), level_name(metadata.level()).into());
    object.insert(
        "ts".into(),
        now.format(&Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string())
            .into(),
    );
    let caller = match (metadata.file(), metadata.line()) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.to_owned(),
        _ => metadata.target().to_owned(),
    };
    object.insert("caller".into(), caller.into());
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    object.insert(
        "msg".into(),
        fields.0.remove("msg").unwrap_or_else(|| Value::from("")),
    );
    object.extend(fields.0);
    object
}

impl<S, N> FormatEvent<S, N> for MetalLbJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let object = line(event, OffsetDateTime::now_utc());
        let text = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(tracing::Level::TRACE)
            .event_format(MetalLbJson)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    #[test]
    fn a_line_has_metallbs_keys_and_the_fields() {
        let lines = capture(|| {
            tracing::info!(
                service = "default/web",
                ip = %"192.0.2.10".parse::<std::net::IpAddr>().unwrap(),
                event = "serviceAnnounced",
                attempts = 3u64,
                "{}: announcing from this node",
                "default/web"
            );
        });
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}")
        };
        assert_eq!(line["level"], "info");
        assert_eq!(line["msg"], "default/web: announcing from this node");
        assert_eq!(line["service"], "default/web");
        assert_eq!(line["ip"], "192.0.2.10");
        assert_eq!(line["event"], "serviceAnnounced");
        assert_eq!(line["attempts"], 3);
        let caller = line["caller"].as_str().unwrap();
        let (file, number) = caller.rsplit_once(':').unwrap();
        assert!(file.ends_with("json.rs"), "{caller}");
        assert!(number.parse::<u32>().is_ok(), "{caller}");
        let ts = line["ts"].as_str().unwrap();
        OffsetDateTime::parse(ts, &Rfc3339).unwrap_or_else(|e| panic!("{ts}: {e}"));
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in ["level", "ts", "caller", "msg"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn levels_use_metallbs_names_and_fields_cannot_hide_the_keys() {
        let lines = capture(|| {
            tracing::warn!(level = "spoofed", msg = "spoofed", "real message");
            tracing::error!("failed");
            tracing::debug!("detail");
        });
        let levels: Vec<&str> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
        assert_eq!(levels, ["warn", "error", "debug"]);
        assert_eq!(lines[0]["msg"], "real message");
        assert_eq!(lines[0]["field_level"], "spoofed");
        assert_eq!(lines[0]["field_msg"], "spoofed");
    }

    #[test]
    fn log_crate_records_carry_their_caller() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .event_format(MetalLbJson)
            .finish();
        let record = log::Record::builder()
            .args(format_args!("from the log crate"))
            .level(log::Level::Warn)
            .target("aya")
            .file(Some("aya/src/bpf.rs"))
            .line(Some(42))
            .build();
        tracing::subscriber::with_default(subscriber, || {
            tracing_log::format_trace(&record).unwrap();
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["caller"], "aya/src/bpf.rs:42");
        assert_eq!(line["msg"], "from the log crate");
        assert_eq!(line["level"], "warn");
        assert!(line.get("log.target").is_none(), "{line}");
    }
}
