//! The guide (`docs/guide/`): every chapter runs as doc-tests, its blocks
//! are code or that code's output, its figures are rendered from the DOT
//! its code writes, and its links lead somewhere. (The outputs and the
//! DOTs themselves are checked by the doc-tests and `docs/guide/make.py
//! --check`.)

use std::fs;
use std::path::{Path, PathBuf};

fn guide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guide")
}

/// The chapters' file names, in order (`01-tensors-and-leaves.md`, ...).
fn chapters() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(guide())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".md") && n.as_bytes()[..2].iter().all(u8::is_ascii_digit))
        .collect();
    names.sort();
    names
}

fn read(name: &str) -> String {
    fs::read_to_string(guide().join(name)).unwrap()
}

/// The fenced blocks of a markdown text: (info string, body), in order.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            out.push((info.trim().to_string(), body.join("\n")));
        }
    }
    out
}

/// The targets of the markdown links and images in `text` (`[..](target)`).
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .map(|rest| rest[..rest.find(')').unwrap()].to_string())
        .collect()
}

#[test]
fn there_are_nine_chapters() {
    assert_eq!(chapters().len(), 9, "{:?}", chapters());
}

#[test]
fn every_chapter_is_included_in_lib_rs_as_doc_tests() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let lines: Vec<&str> = lib.lines().collect();
    for chapter in chapters() {
        let include = format!("#[doc = include_str!(\"../docs/guide/{chapter}\")]");
        let at = lines
            .iter()
            .position(|l| l.trim() == include)
            .unwrap_or_else(|| panic!("src/lib.rs does not include {chapter}"));
        assert!(
            at > 0 && lines[at - 1].starts_with("#[cfg(") && lines[at - 1].contains("doctest"),
            "{chapter} is included without #[cfg(doctest)]: {}",
            lines[at.saturating_sub(1)]
        );
    }
}

#[test]
fn code_blocks_are_plain_rust_and_text_blocks_follow_them() {
    for chapter in chapters() {
        let found = blocks(&read(&chapter));
        assert!(
            found.iter().any(|(info, _)| info == "rust"),
            "{chapter} has no code"
        );
        for (k, (info, body)) in found.iter().enumerate() {
            match info.as_str() {
                // Not `rust,ignore` or `no_run`: every block runs.
                "rust" => {}
                "text" => assert!(
                    k > 0 && found[k - 1].0 == "rust",
                    "{chapter}: a text block (output) that follows no code block:\n{body}"
                ),
                other => panic!("{chapter}: a ```{other} block; the guide has ```rust and ```text only"),
            }
        }
    }
}

#[test]
fn the_table_of_contents_and_the_next_links_follow_the_chapters() {
    let toc = read("README.md");
    let listed: Vec<String> = links(&toc).into_iter().filter(|l| l.ends_with(".md")).collect();
    assert_eq!(listed, chapters());
    let names = chapters();
    for (i, chapter) in names.iter().enumerate() {
        let next = names.get(i + 1).map_or("README.md", String::as_str);
        let last = links(&read(chapter)).pop().unwrap();
        assert_eq!(last, next, "the last link of {chapter}");
    }
}

#[test]
fn relative_links_lead_to_files_that_exist() {
    for name in chapters().into_iter().chain(["README.md".to_string()]) {
        for link in links(&read(&name)) {
            if link.starts_with("http") {
                continue;
            }
            let path = guide().join(link.split('#').next().unwrap());
            assert!(path.exists(), "{name} links to {link}, which does not exist");
        }
    }
}

/// The lines of every `label="..."` of a DOT text, as Graphviz prints them.
fn dot_labels(dot: &str) -> Vec<String> {
    dot.split("label=\"")
        .skip(1)
        .flat_map(|rest| {
            let label = &rest[..rest.find('"').unwrap()];
            label.split("\\n").map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// The texts of an SVG's `<text>` elements, unescaped.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|rest| {
            let start = rest.find('>').unwrap() + 1;
            let end = rest.find("</text>").unwrap();
            rest[start..end]
                .replace("&#45;", "-")
                .replace("&gt;", ">")
                .replace("&lt;", "<")
                .replace("&#160;", " ")
                .replace("&amp;", "&")
        })
        .collect()
}

#[test]
fn every_figure_is_rendered_from_the_dot_its_chapter_writes() {
    let mut shown = Vec::new();
    for chapter in chapters() {
        let text = read(&chapter);
        for link in links(&text).into_iter().filter(|l| l.ends_with(".svg")) {
            let name = link
                .strip_prefix("figures/")
                .unwrap()
                .strip_suffix(".svg")
                .unwrap();
            // The chapter's code writes this DOT and checks it against the
            // committed one.
            assert!(
                text.contains(&format!("\"target/guide/{name}.dot\"")),
                "{chapter} shows {link} but writes no target/guide/{name}.dot"
            );
            assert!(
                text.contains(&format!("\"docs/guide/figures/{name}.dot\"")),
                "{chapter} does not check figures/{name}.dot"
            );
            let dot = fs::read_to_string(guide().join(format!("figures/{name}.dot"))).unwrap();
            let svg = fs::read_to_string(guide().join(&link)).unwrap();
            let texts = svg_texts(&svg);
            for label in dot_labels(&dot) {
                assert!(
                    texts.contains(&label),
                    "{link} has no text {label:?} of its DOT: render it again (docs/guide/make.py)"
                );
            }
            assert_eq!(
                texts.len(),
                dot_labels(&dot).len(),
                "{link}: texts that its DOT lacks"
            );
            shown.push(name.to_string());
        }
    }
    let mut files: Vec<String> = fs::read_dir(guide().join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<String> = shown
        .iter()
        .flat_map(|n| [format!("{n}.dot"), format!("{n}.svg")])
        .collect();
    expected.sort();
    assert_eq!(
        files, expected,
        "figures/ holds exactly the figures the chapters show"
    );
}
