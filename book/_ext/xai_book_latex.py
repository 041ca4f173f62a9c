"""The PDF's structure (`make pdf`; loaded by ``sphinx.local_extensions`` in _config.yml).

Sphinx's LaTeX builder inlines every page of the toc into the root page (book/intro.md) and writes
one document. Left alone, it makes the introduction's own sections the first four numbered chapters
(so "Gradient descent" would be chapter 6, and every figure and equation number would differ from
the website's), forgets the toc's part captions, and lists the citations at the very end, after
the API reference, leaving the Bibliography chapter empty. This post-transform, which runs for
LaTeX output only, rearranges the assembled document:

- the introduction becomes an unnumbered *Preface* whose sections are unnumbered, so the
  chapters are numbered 1 to 14 as on the website;
- each caption of the toc (Background, Grad-CAM, ...) becomes a ``\\part``, and the unnumbered
  parts (For instructors, Reference) start the appendices (chapters A, B, ...);
- the bibliography is printed where the toc puts the Bibliography page;
- a cell tagged ``hide-input`` shows its output only, and one tagged ``hide-cell`` is left out,
  as the website shows them until a reader opens them (paper has no button to open them);
- a table longer than 30 rows, which Sphinx sets as a longtable whose columns never wrap (the
  notation page's second table ran 7 cm into the margin), gets column widths in proportion to
  its longest cells, so that its text wraps.

The website is not touched: every change is made to the LaTeX builder's copy of the doctree.
(sphinx-jupyterbook-latex does the first two, but its LaTeX class needs bbm.sty, which only the
1.4 GB texlive-fonts-extra package ships.)
"""
from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.builders.latex.nodes import thebibliography
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.texescape import escape


def _raw(latex: str) -> nodes.raw:
    return nodes.raw("", latex, format="latex")


def _is_assembled(document: nodes.Node) -> bool:
    """True for the LaTeX builder's whole book (the root page with the other pages inlined)."""
    return any(True for _ in document.findall(addnodes.start_of_file))


class BookStructure(SphinxPostTransform):
    """Hidden cells, long tables, preface and parts; marks the Bibliography page.

    Runs before Sphinx gathers the citations at the end of the document (priority 750), while
    they still lie in the page whose bibliography directive produced them.
    """

    default_priority = 740
    formats = ("latex",)

    def run(self, **kwargs: Any) -> None:
        if not _is_assembled(self.document):
            return
        engine = self.config.latex_engine
        root = next(iter(self.document.findall(nodes.section)))
        self._hidden_cells()
        self._long_tables()
        self._preface(root)
        self._parts(root, engine)
        # BibliographyPlace moves the gathered citations back into this page
        for page in self.document.findall(addnodes.start_of_file):
            if any(True for _ in page.findall(nodes.citation)):
                page["xai_bibliography"] = True
                break

    def _hidden_cells(self) -> None:
        """Cells as the website first shows them: hide-input without input, hide-cell left out."""
        for cell in list(self.document.findall(nodes.container)):
            classes = cell.get("classes", [])
            if "tag_hide-cell" in classes:
                cell.parent.remove(cell)
            elif "tag_hide-input" in classes:
                for part in [c for c in cell.children if "cell_input" in c.get("classes", [])]:
                    cell.remove(part)

    def _long_tables(self) -> None:
        """Column widths for tables of more than 30 rows, in proportion to their longest cells."""
        for table in self.document.findall(nodes.table):
            if "colwidths-given" in table["classes"]:
                continue
            group = table.next_node(nodes.tgroup)
            body = group.next_node(nodes.tbody) if group is not None else None
            if body is None or len(body) <= 30:
                continue
            specs = [c for c in group.children if isinstance(c, nodes.colspec)]
            longest = [14] * len(specs)   # room for a header such as "Symbol"
            for row in group.findall(nodes.row):
                for i, entry in enumerate(row.children[:len(specs)]):
                    longest[i] = max(longest[i], min(len(entry.astext()), 60))
            for spec, width in zip(specs, longest):
                spec["colwidth"] = width
            table["classes"].append("colwidths-given")

    def _preface(self, root: nodes.section) -> None:
        """The root page's text under an unnumbered chapter, its sections unnumbered too."""
        title = root.next_node(nodes.title)
        assert title is not None and title.parent is root
        root.insert(root.index(title) + 1, _raw(
            "\\chapter*{Preface}\\addcontentsline{toc}{chapter}{Preface}\\markboth{Preface}{Preface}"))
        own = [node for node in _own_nodes(root) if isinstance(node, nodes.section)]
        for section in reversed(own):   # innermost first, so that parents still hold them
            depth = _depth(section, root)
            heading = nodes.rubric("", "", *section[0].children, **{"heading-level": 1 + depth})
            heading["ids"] = section["ids"]
            section.replace_self([heading, *section.children[1:]])

    def _parts(self, root: nodes.section, engine: str) -> None:
        """A \\part before each toctree of the root page; unnumbered ones are appendices."""
        wrappers = [node for node in _own_nodes(root) if isinstance(node, nodes.compound)
                    and "toctree-wrapper" in node["classes"]]
        # inlining replaced the toctree nodes: their captions are read from the root page itself
        toctrees = list(self.env.get_doctree(self.config.root_doc).findall(addnodes.toctree))
        if len(wrappers) != len(toctrees):
            return
        appendix = False
        for wrapper, toctree in zip(wrappers, toctrees):
            latex = ""
            if not toctree.get("numbered") and not appendix:
                latex, appendix = "\\appendix", True
            if toctree.get("caption"):
                latex += "\\part{%s}" % escape(toctree["caption"], engine)
            if latex:
                wrapper.parent.insert(wrapper.parent.index(wrapper), _raw(latex))


class BibliographyPlace(SphinxPostTransform):
    """Move the gathered citations (Sphinx's thebibliography) into the Bibliography page."""

    default_priority = 760
    formats = ("latex",)

    def run(self, **kwargs: Any) -> None:
        if not _is_assembled(self.document):
            return
        bibliography = next(iter(self.document.findall(thebibliography)), None)
        page = next((p for p in self.document.findall(addnodes.start_of_file)
                     if p.get("xai_bibliography")), None)
        if bibliography is None or page is None:
            return
        # The page's title and sentence give way: thebibliography opens its own chapter,
        # "Bibliography". Labels on the page stay, so that references to it still resolve.
        ids = [i for node in page.findall(nodes.Element) for i in node.get("ids", [])]
        bibliography.parent.remove(bibliography)
        target = nodes.target("", "", ids=ids)
        page.children = []
        page += bibliography
        page.insert(0, target)


def _own_nodes(root: nodes.Element) -> list[nodes.Element]:
    """The elements below ``root`` that belong to the root page, not to an inlined page.

    Walks down from ``root`` and stops at each ``start_of_file``: Sphinx moves an inlined page's
    children into that node without updating their ``parent``, so walking up would not find it.
    """
    found: list[nodes.Element] = []
    for child in root.children:
        if isinstance(child, nodes.Element) and not isinstance(child, addnodes.start_of_file):
            found.append(child)
            found.extend(_own_nodes(child))
    return found


def _depth(section: nodes.section, root: nodes.section) -> int:
    """1 for a section of the root page directly under its title, 2 below that, ..."""
    depth, parent = 0, section.parent
    while parent is not None and parent is not root:
        depth += isinstance(parent, nodes.section)
        parent = parent.parent
    return depth + 1


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_post_transform(BookStructure)
    app.add_post_transform(BibliographyPlace)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
