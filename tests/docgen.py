"""Generate documents with known content for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path


def make_pdf(
    path: Path,
    pages: list[str],
    *,
    headings: list[str] | None = None,
    user_password: str | None = None,
) -> Path:
    """A PDF with one text per page (and an outline entry per heading)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for i, text in enumerate(pages):
        pdf.add_page()
        if headings:
            pdf.start_section(headings[i])
            pdf.set_font("Helvetica", style="B", size=14)
            pdf.multi_cell(0, 8, headings[i], new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    if user_password is not None:
        pdf.set_encryption(owner_password="owner-" + user_password, user_password=user_password)
    pdf.output(str(path))
    return path


def make_docx(path: Path, sections: list[tuple[str, str]]) -> Path:
    """A Word document with (heading, paragraph) sections."""
    import docx

    document = docx.Document()
    for heading, text in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    document.save(str(path))
    return path


def make_html(path: Path, sections: list[tuple[str, str]], *, title: str = "Manual") -> Path:
    """An HTML page with navigation, scripts and styles around (heading, paragraph) sections."""
    body = "\n".join(f"<h2>{h}</h2>\n<p>{t}</p>" for h, t in sections)
    path.write_text(
        f"""<!DOCTYPE html>
<html><head><title>{title}</title>
<style>body {{ color: red; }} .secret-style {{ display: none }}</style>
<script>var trackingScriptText = "do not index this script";</script></head>
<body>
<nav><a href="/">Home</a> <a href="/next">Navigation link text</a></nav>
<div class="navheader">Prev Up Next navheader text</div>
<main><h1>{title}</h1>
{body}
</main>
<footer>Footer boilerplate text</footer>
</body></html>
""",
        encoding="utf-8",
    )
    return path


def make_markdown(path: Path, sections: list[tuple[str, str]]) -> Path:
    """A Markdown file with (heading, paragraph) sections."""
    path.write_text("\n\n".join(f"## {h}\n\n{t}" for h, t in sections) + "\n", encoding="utf-8")
    return path
