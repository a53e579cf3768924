"""MCP tools: the app's public API served over MCP (gradio[mcp]), listed and called on loopback."""

import asyncio
import json

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from llm_dit.core.request import field_help
from ui import build_demo

TOOLS = {"txt2img", "img2img", "vl_generate", "vl_extract", "compare", "rewrite", "encode", "vl_encode"}


@pytest.fixture(scope="module")
def mcp_url(settings, manager):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, mcp_server=True)
    yield url + "gradio_api/mcp/"
    demo.close()


async def _session(url, work):
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def _tools(url) -> dict:
    async def work(session):
        return {t.name: t for t in (await session.list_tools()).tools}
    return asyncio.run(_session(url, work))


def test_public_endpoints_are_tools_and_private_events_are_not(mcp_url):
    tools = _tools(mcp_url)
    assert TOOLS <= set(tools)
    assert not {"vl_preview", "remember", "restore", "load_png", "request_stop", "apply"} & set(tools)


def test_every_parameter_is_described_from_its_field(mcp_url):
    tools = _tools(mcp_url)
    properties = tools["txt2img"].inputSchema["properties"]
    assert properties["num_inference_steps"]["description"] == field_help("num_inference_steps") + "."
    assert "64 to 4096" in properties["height"]["description"]
    assert all(p.get("description") for t in TOOLS for p in tools[t].inputSchema["properties"].values())
    assert tools["vl_generate"].description.startswith("Style transfer")


def test_txt2img_over_mcp(mcp_url):
    async def work(session):
        return await session.call_tool("txt2img", {"prompt": "a fox", "height": 64, "width": 64, "seed": 9,
                                                   "num_inference_steps": 2})
    result = asyncio.run(_session(mcp_url, work))
    assert not result.isError
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert ".png" in text and ("'forwards': 2" in text or '"forwards": 2' in text)


def test_bad_input_over_mcp_is_explained(mcp_url):
    async def work(session):
        return await session.call_tool("txt2img", {"prompt": "a fox", "height": 65, "width": 64})
    result = asyncio.run(_session(mcp_url, work))
    assert result.isError and "height=65 is not a multiple of 16" in json.dumps([c.text for c in result.content])
