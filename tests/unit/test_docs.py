"""The documentation: the site in docs/ builds with `mkdocs build --strict` (every page in the nav,
every link and anchor between pages found; mkdocs.yml says what fails it), and the README stays a
short front door whose relative links all lead to a file. Offline, in a few seconds."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.harness import REPO

README_MAX_LINES = 200


def test_the_docs_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pages = [page.stem for page in (REPO / "docs").glob("*.md") if page.name != "index.md"]
    assert (site / "index.html").is_file() and pages
    assert [page for page in pages if not (site / page / "index.html").is_file()] == []
    # The README's links into a page's section land on a heading the site has (mkdocs checks the
    # links between pages; the README is not one of them).
    anchors = re.findall(r"\]\(docs/([\w-]+)\.md#([\w-]+)\)", (REPO / "README.md").read_text())
    built = {page: (site / ("" if page == "index" else page) / "index.html").read_text() for page, _ in anchors}
    assert [f"{page}.md#{anchor}" for page, anchor in anchors if f'id="{anchor}"' not in built[page]] == []


def relative_links(markdown: str) -> list[str]:
    """The targets of the inline and reference links outside code blocks and code spans, less
    URLs with a scheme and links within the page."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"(`+).+?\1", "", text, flags=re.DOTALL)
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, flags=re.MULTILINE)
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^#", t)]


def test_the_readme_is_a_short_front_door_whose_relative_links_lead_to_files():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    links = relative_links(text)
    assert links, "the README links to the docs pages"
    missing = [link for link in links if not (REPO / link.split("#")[0]).exists()]
    assert missing == []


def test_relative_links_are_found_and_code_is_left_out():
    markdown = (
        "[a](docs/a.md) [b](docs/b.md#part) [c](https://example.org) [d](#here) `[e](e.md)`\n"
        "```\n[f](f.md)\n```\n[g]: docs/g.md\n"
    )
    assert relative_links(markdown) == ["docs/a.md", "docs/b.md#part", "docs/g.md"]


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_LINE = re.compile(r"(?:python -m mnist_pipeline(?:\.stages)?|mnist-pipeline) ([^`|;&#>\n]*)")


def code(page: Path) -> str:
    """What a page shows as code: its fenced blocks and its inline code spans, one per line."""
    text = page.read_text()
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    spans = re.findall(r"(`+)(.+?)\1", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))
    return "\n".join([*blocks, *(span for _, span in spans)])


def quoted_command_lines() -> list[tuple[str, list[str]]]:
    """Each `python -m mnist_pipeline …` or `mnist-pipeline …` the pages show as code: (page, its words)."""
    found = []
    for page in PAGES:
        for match in COMMAND_LINE.finditer(code(page)):
            words = [word.rstrip(",.:;") for word in match.group(1).split()]
            if words and words[0] not in ("COMMAND", "STAGE", "…", "entry") and not words[0].startswith("{"):
                found.append((page.name, words))
    return found


def test_every_command_the_pages_show_exists_with_the_options_it_is_given():
    """A renamed command or option leaves no page showing the old one (the options of `train` beyond
    its own are overrides of models.MODEL, checked by params.yaml's rules, not here)."""
    import argparse

    from mnist_pipeline.cli import COMMANDS

    shown = quoted_command_lines()
    assert len(shown) >= 20  # the pages show the tools' commands: this reads them
    for page, words in shown:
        if words[0] == "--help":
            continue
        assert words[0] in COMMANDS, f"{page}: {' '.join(words)}: no command {words[0]!r}"
        parser = argparse.ArgumentParser()
        __import__(COMMANDS[words[0]].module)
        sys.modules[COMMANDS[words[0]].module].configure(parser)
        options = {option for action in parser._actions for option in action.option_strings}
        given = {word.split("=")[0] for word in words[1:] if word.startswith("--")}
        if words[0] != "train":
            assert given <= options, f"{page}: {' '.join(words)}: no option {sorted(given - options)}"


def test_every_make_target_the_pages_show_exists():
    targets = set(re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    shown = {
        target
        for page in PAGES
        for target in re.findall(r"(?:^|\s)make ([a-z][a-z-]*)", code(page), flags=re.MULTILINE)
    }
    assert shown and shown <= targets, sorted(shown - targets)


def test_the_readme_results_are_the_benchmark_runs():
    """The README's results table and floor sentence quote bench/results.json, the run that wrote
    bench/RESULTS.md: a new benchmark run without a README update (or the reverse) fails here."""
    import json
    import statistics

    from bench.run import epoch_figures, fit_seconds

    r = json.loads((REPO / "bench" / "results.json").read_text())
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Results at the default parameters", 1)[1].split("\n## ", 1)[0]
    for name, model in r["full"]["models"].items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {name} ("))
        assert row.split(" | ")[1:] == [
            f"{model['test_accuracy']:.4f}",
            f"{model['test_macro_f1']:.4f}",
            f"{model['epochs_trained']}",
            f"{statistics.median(fit_seconds(r, name)):.1f} s |",
        ], row
    per_epoch, floor_s, _ = epoch_figures(r)
    ratio = statistics.median(per_epoch) / floor_s
    peak = statistics.median(r["matmul"]["peak"])
    quoted = (
        f"{statistics.median(per_epoch):.2f} s an epoch: {ratio:.1f}× the compute floor of {floor_s:.2f} s",
        f"({peak:,.0f} GFLOP/s, AMX)" if r["matmul"]["amx"] else f"({peak:,.0f} GFLOP/s)",
    )
    flat = " ".join(section.split())
    assert [text for text in quoted if text not in flat] == []
