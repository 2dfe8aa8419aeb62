"""The HTML reports' inline stylesheets and script (kept apart so the templates stay about structure)."""

from __future__ import annotations

CSS = """
:root {
  --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa;
  --pass: #1a7f37; --pass-bg: #dafbe1; --fail: #cf222e; --fail-bg: #ffebe9; --warn: #9a6700; --warn-bg: #fff8c5;
  --sip: #2f6f3e; --webhook: #bc4c00; --rest: #8250df; --wsc: #0969da; --wss: #1b7c83; --app: #57606a;
  --audio: #6e7781; --caller: #2f6f3e;
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: var(--fg);
  background: var(--bg); }
code, pre, .mono { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px; }
header.top { padding: 18px 28px 12px; border-bottom: 1px solid var(--line); background: var(--panel); }
header.top h1 { margin: 0 0 4px; font-size: 22px; }
header.top .sub { color: var(--muted); }
main { padding: 12px 28px 40px; max-width: 1500px; }
.toolbar { display: flex; gap: 8px; align-items: center; margin: 10px 0 6px; flex-wrap: wrap; }
.toolbar button { font: inherit; padding: 3px 10px; border: 1px solid var(--line); border-radius: 6px;
  background: #fff; cursor: pointer; }
.toolbar button:hover { background: var(--panel); }
.toolbar label { color: var(--muted); margin-left: 8px; }
table.summary { border-collapse: collapse; margin: 6px 0 18px; min-width: 640px; }
table.summary td, table.summary th { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; }
table.summary th { color: var(--muted); font-weight: normal; font-size: 12px; }
table.summary td.why { color: var(--fail); font-size: 12px; max-width: 720px; }
table.compare td { vertical-align: top; max-width: 520px; font-size: 13px; }
table.compare tr.differs th, table.compare tr.differs td { background: #fff8c5; }
a { color: var(--wsc); text-decoration: none; }
a:hover { text-decoration: underline; }
.badge { display: inline-block; min-width: 46px; text-align: center; padding: 1px 8px; border-radius: 10px;
  font-size: 12px; font-weight: bold; letter-spacing: .03em; }
.badge.pass { background: var(--pass-bg); color: var(--pass); border: 1px solid #aceebb; }
.badge.fail { background: var(--fail-bg); color: var(--fail); border: 1px solid #ffcecb; }
.badge.error { background: var(--fail); color: #fff; border: 1px solid var(--fail); }
details.scenario { border: 1px solid var(--line); border-radius: 8px; margin: 14px 0; background: #fff; }
details.scenario.failed { border-color: #ff8182; box-shadow: 0 0 0 1px #ffcecb; }
details.scenario > summary { padding: 10px 14px; cursor: pointer; display: flex; gap: 10px; align-items: center;
  background: var(--panel); border-radius: 8px; list-style: none; }
details.scenario[open] > summary { border-bottom: 1px solid var(--line); border-radius: 8px 8px 0 0; }
details.scenario > summary::-webkit-details-marker { display: none; }
details.scenario > summary::before { content: "\\25B8"; color: var(--muted); width: 10px; }
details.scenario[open] > summary::before { content: "\\25BE"; }
.scenario h2 { font-size: 16px; margin: 0; }
.scenario .meta { color: var(--muted); font-size: 12px; margin-left: auto; }
.scenario-body { padding: 10px 16px 16px; }
.verdict { padding: 8px 12px; border-radius: 6px; margin: 4px 0 10px; }
.verdict.fail { background: var(--fail-bg); color: #82071e; border: 1px solid #ffcecb; }
.desc { color: var(--muted); margin: 2px 0 8px; }
ul.warnings { margin: 4px 0 10px; padding: 6px 6px 6px 24px; color: var(--warn); background: var(--warn-bg);
  font-size: 13px; border-radius: 4px; }
ul.notes { margin: 4px 0 10px; padding-left: 18px; color: var(--muted); font-size: 13px; }
.model-notice { margin: 6px 0; padding: 6px 12px; color: var(--warn); background: var(--warn-bg);
  border-left: 6px solid var(--warn); border-radius: 4px; font-size: 13px; }
h3 { font-size: 14px; margin: 16px 0 6px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
h3 .hint { text-transform: none; letter-spacing: 0; font-weight: normal; font-size: 12px; margin-left: 8px; }
.checks-pass { display: flex; flex-wrap: wrap; gap: 6px; margin: 6px 0; }
.chip { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px; border: 1px solid #aceebb;
  background: var(--pass-bg); color: var(--pass); }
.check.fail { border: 1px solid #ff8182; border-left: 6px solid var(--fail); background: var(--fail-bg);
  border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.check.fail .name { font-weight: bold; color: var(--fail); }
.check.fail .cmp { display: grid; grid-template-columns: 80px 1fr; gap: 2px 10px; margin-top: 4px; }
.check.fail .cmp .k { color: var(--muted); font-size: 12px; padding-top: 2px; }
.check.fail pre { margin: 0; white-space: pre-wrap; word-break: break-word; background: #fff; padding: 3px 6px;
  border-radius: 4px; border: 1px solid #ffcecb; max-height: 180px; overflow: auto; }
.check.fail .detail { color: var(--muted); font-size: 12px; margin-top: 4px; }
section.call { border-top: 1px dashed var(--line); margin-top: 14px; padding-top: 6px; }
section.call h3.callid { text-transform: none; letter-spacing: 0; color: var(--fg); font-size: 15px; }
.kv { display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 13px; margin: 4px 0 8px; }
.kv span b { color: var(--muted); font-weight: normal; }
details.raw { margin: 4px 0; }
details.raw > summary { cursor: pointer; color: var(--wsc); font-size: 13px; }
details.raw pre { background: var(--panel); padding: 8px; border-radius: 6px; max-height: 320px; overflow: auto;
  white-space: pre-wrap; word-break: break-word; }
svg.waveform { width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 6px;
  background: #fff; }
svg text { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
.wf-note { color: var(--muted); font-size: 12px; margin: 3px 0 0; }
.transcripts { display: flex; flex-direction: column; gap: 5px; margin: 4px 0; max-width: 1100px; }
.tr { display: grid; grid-template-columns: 64px 92px 1fr; gap: 8px; align-items: baseline; }
.tr .t { color: var(--muted); font-size: 12px; text-align: right; }
.tr .who { font-size: 12px; font-weight: bold; text-transform: uppercase; letter-spacing: .04em; }
.tr .text { padding: 4px 10px; border-radius: 8px; }
.tr.user .who { color: var(--caller); }
.tr.user .text { background: #eef6ee; border: 1px solid #cde6cf; }
.tr.assistant .who { color: var(--wss); }
.tr.assistant .text { background: #eaf5f6; border: 1px solid #c3e3e6; }
.tr.err .who { color: var(--fail); }
.tr.err .text { background: var(--fail-bg); border: 1px solid #ffcecb; color: #82071e; }
.tr .tag { color: var(--warn); font-size: 12px; margin-left: 6px; }
.empty { color: var(--muted); font-style: italic; font-size: 13px; }
.ladder { border: 1px solid var(--line); border-radius: 6px; max-height: 760px; overflow: auto; background: #fff; }
.ladder .head, .ladder summary, .ladder .gap { display: grid; grid-template-columns: 74px 910px minmax(260px, 1fr);
  align-items: center; }
.ladder .head { position: sticky; top: 0; z-index: 2; background: var(--panel); border-bottom: 1px solid var(--line); }
.ladder .head .t, .ladder .head .d { font-size: 11px; color: var(--muted); padding: 0 6px; }
.ladder details.ev > summary { list-style: none; cursor: pointer; }
.ladder details.ev > summary::-webkit-details-marker { display: none; }
.ladder details.ev > summary:hover { background: #f3f6fa; }
.ladder details.ev[open] > summary { background: #eef4ff; }
.ladder .t { font-size: 11px; color: var(--muted); text-align: right; padding-right: 8px;
  font-family: "DejaVu Sans Mono", monospace; }
.ladder .t.approx { font-style: italic; }
.ladder .d { font-size: 12px; padding: 0 8px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ladder .err .d { color: var(--fail); }
.ladder .warn .d { color: var(--warn); }
.ladder svg { display: block; }
.ladder .payload { margin: 0 0 4px 74px; border-left: 3px solid #b6d0f7; background: var(--panel); }
.ladder .payload pre { margin: 0; padding: 6px 10px; max-height: 360px; overflow: auto; white-space: pre-wrap;
  word-break: break-word; }
.ladder .gap { color: var(--muted); font-size: 11px; }
.ladder .gap .t { font-style: italic; }
.ladder svg .lane { stroke: #d8dee4; stroke-width: 1; }
.ladder svg .lbl { font-size: 11px; paint-order: stroke; stroke: #fff; stroke-width: 3px; stroke-linejoin: round; }
.ladder svg .lanehead rect { fill: #fff; stroke: #8c959f; }
.ladder svg .lanehead text { font-size: 12px; font-weight: bold; fill: var(--fg); }
.c-sip { stroke: var(--sip); fill: var(--sip); } .c-webhook { stroke: var(--webhook); fill: var(--webhook); }
.c-rest { stroke: var(--rest); fill: var(--rest); } .c-wsc { stroke: var(--wsc); fill: var(--wsc); }
.c-wss { stroke: var(--wss); fill: var(--wss); } .c-app { stroke: var(--app); fill: var(--app); }
.c-audio { stroke: var(--audio); fill: var(--audio); } .c-caller { stroke: var(--caller); fill: var(--caller); }
.c-err { stroke: var(--fail); fill: var(--fail); } .c-warn { stroke: var(--warn); fill: var(--warn); }
svg .lbl.c-sip, svg .lbl.c-webhook, svg .lbl.c-rest, svg .lbl.c-wsc, svg .lbl.c-wss, svg .lbl.c-app,
svg .lbl.c-audio, svg .lbl.c-caller, svg .lbl.c-err, svg .lbl.c-warn { stroke: #fff; }
.ladder svg line.arrow { stroke-width: 1.6; }
.ladder svg line.arrow.dashed { stroke-dasharray: 5 3; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); margin: 4px 0; }
.legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
details.applog pre .err { color: var(--fail); }
.hidden { display: none !important; }
footer { color: var(--muted); font-size: 12px; padding: 10px 28px 30px; }
"""

JS = """
(function () {
  'use strict';
  function all(sel) { return Array.prototype.slice.call(document.querySelectorAll(sel)); }
  function on(id, fn) { var el = document.getElementById(id); if (el) { el.addEventListener('click', fn); } }
  on('expand-all', function () { all('details.scenario').forEach(function (d) { d.open = true; }); });
  on('collapse-all', function () { all('details.scenario').forEach(function (d) { d.open = false; }); });
  var only = document.getElementById('only-failed');
  if (only) {
    only.addEventListener('change', function () {
      all('details.scenario').forEach(function (d) {
        d.classList.toggle('hidden', only.checked && !d.classList.contains('failed'));
      });
    });
  }
  all('a.jump').forEach(function (a) {
    a.addEventListener('click', function () {
      var target = document.getElementById(a.getAttribute('href').slice(1));
      if (target && target.tagName === 'DETAILS') { target.open = true; }
    });
  });
  document.documentElement.setAttribute('data-ready', '1');
})();
"""

# the load report (templates/load.html.j2): tables and charts (report/charts.py), no script
LOAD_CSS = """
body { margin: 24px; font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1f2328;
  max-width: 1240px; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 16px; margin: 26px 0 6px; }
.sub { color: #656d76; margin: 0 0 14px; }
.ok { color: #1a7f37; } .bad { color: #cf222e; font-weight: bold; }
.aborted { background: #fff8c5; color: #9a6700; padding: 2px 8px; border-radius: 4px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
td, th { border-bottom: 1px solid #d0d7de; padding: 3px 10px; text-align: right; }
th { color: #656d76; font-weight: normal; font-size: 12px; }
td:first-child, th:first-child { text-align: left; }
td.unit { text-align: left; color: #656d76; font-size: 12px; }
.layout { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 14px; margin: 8px 0; }
svg.chart { width: 100%; height: auto; display: block; border: 1px solid #d0d7de; border-radius: 6px;
  background: #fff; }
svg.chart text { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 11px; fill: #1f2328; }
svg.chart .title { font-size: 13px; font-weight: bold; }
svg.chart .tick { fill: #656d76; }
svg.chart .axis-label { fill: #57606a; font-size: 12px; }
svg.chart .none { fill: #8c959f; font-style: italic; }
svg.chart .grid { stroke: #eaeef2; }
svg.chart .axis { stroke: #8c959f; }
.hint { color: #656d76; font-size: 12px; font-weight: normal; margin-left: 8px; }
ul.notes { color: #656d76; }
"""
