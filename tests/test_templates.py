"""Templates: markdown + YAML front matter; bad files are named with their line, others load."""

import pytest

from llm_dit.pipelines.generate import txt2img
from llm_dit.core.templates import get_template, load_templates, names, parse_template, shipped

from .conftest import small


def test_shipped_templates():
    templates, errors = shipped()
    assert errors == ()
    styles, rewriters = names("style"), names("rewriter")
    assert len(styles) >= 30 and len(rewriters) >= 4
    assert {t.category for t in templates.values()} >= {"photography", "illustration", "painting", "3d",
                                                         "design", "typography", "rewriter"}
    assert get_template("JSON character sheet", "rewriter").output == "json"
    assert all(templates[n].system_prompt and templates[n].description for n in templates)


def test_parse_a_template():
    t = parse_template("---\nname: Mood\ncategory: painting\ndescription: \"a: b\"\nadd_think_block: true\n"
                       "thinking_content: plan it\n---\nPaint softly.\n")
    assert (t.name, t.category, t.description, t.system_prompt) == ("Mood", "painting", "a: b", "Paint softly.")
    assert t.add_think_block and t.thinking_content == "plan it"


@pytest.mark.parametrize("text,message", [
    ("name: x\n", r"bad.md:1: a template starts with a '---' line"),
    ("---\nname: x\n", r"bad.md: the front matter opened on line 1 is never closed"),
    ("---\nname: x\ncategory: a\ndescription: one: two\n---\nbody", r"bad.md:4: invalid YAML front matter"),
    ("---\nname: x\ncategory: a\ncolour: red\n---\nbody", r"unknown front-matter key\(s\) \['colour'\]"),
    ("---\ncategory: a\n---\nbody", r"needs a `name`"),
])
def test_malformed_templates_name_the_fault(text, message):
    with pytest.raises(ValueError, match=message):
        parse_template(text, "bad.md")


def test_a_malformed_file_does_not_stop_the_others(tmp_path):
    (tmp_path / "good.md").write_text("---\nname: Good\ncategory: design\n---\nClean lines.\n")
    (tmp_path / "bad.md").write_text("---\nname: Bad\ncategory: design\ndescription: a: b\n---\nx\n")
    templates, errors = load_templates(tmp_path)
    assert list(templates) == ["Good"]
    assert len(errors) == 1 and "bad.md:4" in errors[0]


def test_style_template_feeds_the_system_prompt_and_is_named(manager):
    result = txt2img(manager, small(template="Swiss poster"))
    system = get_template("Swiss poster").system_prompt
    assert result.metadata["chat_text"].startswith(f"<|im_start|>system\n{system}<|im_end|>")
    assert result.metadata["template"] == "Swiss poster"
    own = txt2img(manager, small(template="Swiss poster", system_prompt="Mine."))
    assert own.metadata["chat_text"].startswith("<|im_start|>system\nMine.<|im_end|>")  # your own part wins


def test_unknown_template_is_explained(manager):
    with pytest.raises(ValueError, match=r"template='Nope' is not a known style template: use one of"):
        txt2img(manager, small(template="Nope"))
    with pytest.raises(ValueError, match=r"not a known style template"):
        txt2img(manager, small(template="Concise expander"))  # a rewriter is not a style
