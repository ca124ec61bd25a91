"""Loading, writing, validating and building workflows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import chatter

from conftest import REACT


def test_from_dict_json_yaml_and_load_give_the_same_graph(tmp_path: Path) -> None:
    a = chatter.Workflow.from_dict(REACT)
    b = chatter.Workflow.from_json(json.dumps(REACT))
    c = chatter.Workflow.from_yaml(a.to_yaml())
    p = tmp_path / "wf.json"
    p.write_text(a.to_json())
    d = chatter.Workflow.load(p)
    assert a.to_dict() == b.to_dict() == c.to_dict() == d.to_dict()
    assert a.name == "react"
    assert [n["id"] for n in d.to_dict()["nodes"]] == ["start", "agent", "tools", "end"]


def test_validate_reports_every_issue_with_code_path_and_node() -> None:
    wf = chatter.Workflow.from_dict(
        {
            "nodes": [
                {"id": "a", "type": "llm", "config": {"temperature": 9}},
                {"id": "b", "type": "bogus"},
            ],
            "edges": [{"source": "a", "target": "zz"}],
        }
    )
    report = wf.validate()
    assert not report.is_valid
    got = {(i.code, i.node_id, i.path) for i in report.issues}
    assert got == {
        ("CHT-V005", None, "$.edges[0].target"),
        ("CHT-V006", "b", "$.nodes[1].type"),
        ("CHT-V007", None, "$.nodes"),
        ("CHT-V013", "a", "$.nodes[0].config.temperature"),
    }
    temp = next(i for i in report.issues if i.code == "CHT-V013")
    assert temp.severity == "error"
    assert temp.message == "node `a` config `temperature`: must be between 0 and 2, found 9"
    with pytest.raises(chatter.ValidationError) as info:
        report.raise_for_errors()
    assert len(info.value.issues) == 4


def test_valid_workflow_has_no_errors(react: chatter.Workflow) -> None:
    assert react.validate().errors == []
    react.validate().raise_for_errors()


def test_builder_builds_conditions_and_branches() -> None:
    wf = (
        chatter.Workflow.builder("loop")
        .node("start", "start")
        .node("check", "conditional", condition="variables.n > 1")
        .node("end", "end")
        .edge("start", "check")
        .edge("check", "end", branch="true")
        .edge("check", "end", branch="false")
        .build()
    )
    d = wf.to_dict()
    assert d["name"] == "loop" and wf.name == "loop"
    assert [e.get("sourceHandle") for e in d["edges"]] == [None, "true", "false"]
    assert wf.validate().is_valid


def test_parse_errors_are_validation_errors_with_location(tmp_path: Path) -> None:
    with pytest.raises(chatter.ValidationError, match="line 1, column 11"):
        chatter.Workflow.from_json('{"nodes": [')
    with pytest.raises(ValueError, match=r"at \$\.nodes: expected an array of nodes"):
        chatter.Workflow.from_dict({"nodes": 5})
    with pytest.raises(chatter.ChatterError, match="cannot read"):
        chatter.Workflow.load(tmp_path / "missing.yaml")


def test_wrong_argument_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="expects a dict, not list"):
        chatter.Workflow.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a str"):
        chatter.Workflow.from_json(b"{}")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"type `object` at \$\.nodes\[0\]"):
        chatter.Workflow.from_dict({"nodes": [object()]})
    with pytest.raises(TypeError):
        chatter.Workflow("nope")  # type: ignore[arg-type]
