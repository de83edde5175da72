//! The `--quick` demo end to end, in process: real servers on loopback, real HTTP load.
//!
//! Asserts structure and accounting only (the report is written and well-formed, every
//! request is accounted for, every stack saw the same seeded traffic), never the overload
//! figures themselves, which depend on the machine.

use std::path::PathBuf;

use brownout_demo::cli::Args;
use serde_json::Value;

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("brownout-demo-quick")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_writes_a_well_formed_report_and_accounts_for_every_request() {
    let out = out_dir();
    let _ = std::fs::remove_dir_all(&out);
    let out_text = out.display().to_string();
    let args = Args::parse(["--quick", "--json", "--out", &out_text]).unwrap();
    let finished = brownout_demo::run(&args).await.unwrap();

    // The files.
    assert_eq!(
        finished.report,
        std::fs::canonicalize(out.join("report.html")).unwrap()
    );
    let html = std::fs::read_to_string(&finished.report).unwrap();
    let svg = std::fs::read_to_string(out.join("goodput.svg")).unwrap();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary, finished.json);

    // Two phases (1x, 4x) and the slowdown.
    let phases = summary["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["load 1x", "load 4x", "slowdown 3x at load 0.8x"]);

    // The HTML: one document, the summary charts plus three per phase, a table row per
    // stack per phase, no NaN anywhere.
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</body></html>"));
    assert_eq!(count(&html, "<svg"), 2 + 3 * phases.len());
    assert_eq!(count(&html, "<svg"), count(&html, "</svg>"));
    for stack in ["unprotected", "tower", "brownout"] {
        let row = format!("<tr data-stack=\"{stack}\">");
        assert_eq!(count(&html, &row), phases.len(), "{stack} rows");
        assert!(finished.table.contains(stack));
    }
    assert!(!html.contains("<?xml"), "an XML prologue inside the HTML");
    for text in [&html, &svg, &finished.table, &summary.to_string()] {
        assert!(!text.contains("NaN"), "NaN in the output");
        assert!(!text.contains("inf%"), "an infinite figure in the output");
    }
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
    assert!(svg.contains("brownout") && svg.contains("unprotected"));

    // The JSON: every request accounted for, the same seeded traffic for every stack.
    for phase in phases {
        let stacks = phase["stacks"].as_array().unwrap();
        let order: Vec<&str> = stacks
            .iter()
            .map(|s| s["stack"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["unprotected", "tower", "brownout"]);
        let sent: Vec<u64> = stacks.iter().map(|s| as_u64(&s["sent"], "sent")).collect();
        assert!(sent[0] > 0);
        assert!(sent.iter().all(|&n| n == sent[0]), "same traffic: {sent:?}");
        for s in stacks {
            let name = s["stack"].as_str().unwrap();
            let (sent, ok, rejected, failed) = (
                as_u64(&s["sent"], "sent"),
                as_u64(&s["ok"], "ok"),
                as_u64(&s["rejected"], "rejected"),
                as_u64(&s["failed"], "failed"),
            );
            assert_eq!(
                sent,
                ok + rejected + failed,
                "{name}: sent = ok + rejected + failed"
            );
            let by_reason: u64 = s["rejections"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| as_u64(v, "rejections"))
                .sum();
            assert_eq!(by_reason, rejected, "{name}: rejections by reason");
            let by_kind: u64 = s["failures"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| as_u64(v, "failures"))
                .sum();
            assert_eq!(by_kind, failed, "{name}: failures by kind");
            let classes = s["classes"].as_array().unwrap();
            assert_eq!(classes.len(), 5);
            let class_sent: u64 = classes
                .iter()
                .map(|c| as_u64(&c["sent"], "class sent"))
                .sum();
            let class_ok: u64 = classes.iter().map(|c| as_u64(&c["ok"], "class ok")).sum();
            assert_eq!((class_sent, class_ok), (sent, ok), "{name}: classes add up");
            let goodput = s["goodput_pct"].as_f64().unwrap();
            assert!(
                (0.0..=110.0).contains(&goodput),
                "{name}: goodput {goodput}"
            );
            let is_brownout = name == "brownout";
            assert_eq!(s["max_level"].is_string(), is_brownout, "{name}: level");
        }
    }
}
