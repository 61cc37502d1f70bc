"""Accessibility basics, checked in the browser on the page as rendered (issue 26): every form
control labelled, every button and link named, text contrast at least 4.5:1 against the
background it is drawn on, and a page usable by keyboard (Tab reaches its controls, and the
focused one shows a visible indicator).

`violations(page)` and `keyboard_violations(page)` return what is wrong, one line each, so a
test's failure message says which element and why; a page that passes returns [].
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

MIN_CONTRAST = 4.5

# Runs in the page. Colours are read from the computed style (rgb()/rgba(), or any other CSS
# colour through a 1x1 canvas), the background found by walking up the ancestors and compositing
# their background colours until an opaque one (the canvas white above <html>), and the contrast
# computed with WCAG 2's relative luminance. Disabled controls are exempt, as WCAG allows.
_CHECK = """
(minContrast) => {
  const out = [];
  const shown = (el) => {
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  const describe = (el) => {
    let text = el.tagName.toLowerCase();
    if (el.id) text += '#' + el.id;
    if (el.getAttribute('name')) text += `[name=${el.getAttribute('name')}]`;
    const words = (el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 40);
    return words ? `${text} "${words}"` : text;
  };
  const referenced = (el, attribute) => (el.getAttribute(attribute) || '').split(/\\s+/)
    .map((id) => id && document.getElementById(id)).filter(Boolean)
    .map((node) => node.textContent.trim()).join(' ').trim();
  const name = (el) => (el.getAttribute('aria-label') || '').trim()
    || referenced(el, 'aria-labelledby')
    || (el.textContent || '').trim()
    || [...el.querySelectorAll('img[alt]')].map((img) => img.alt.trim()).join(' ').trim()
    || (el.getAttribute('title') || '').trim()
    || (['submit', 'button', 'reset'].includes(el.type) ? (el.value || '').trim() : '');

  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !shown(el)) continue;
    const labelled = [...(el.labels || [])].some((label) => label.textContent.trim())
      || (el.getAttribute('aria-label') || '').trim() || referenced(el, 'aria-labelledby');
    if (!labelled) out.push(`no label: ${describe(el)}`);
  }
  const rendered = (el) => el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== 'hidden' && !el.closest('[aria-hidden=true]');
  for (const el of document.querySelectorAll('button, a[href], [role=button], [role=link]')) {
    if (!rendered(el)) continue;  // an empty link has no size, yet Tab and readers find it
    if (!name(el)) out.push(`no accessible name: ${describe(el)}`);
  }

  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 1;
  const paint = canvas.getContext('2d', { willReadFrequently: true });
  const rgba = (css) => {
    const m = css.match(/^rgba?\\(([\\d.]+),\\s*([\\d.]+),\\s*([\\d.]+)(?:,\\s*([\\d.]+))?\\)$/);
    if (m) return [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]];
    paint.clearRect(0, 0, 1, 1);
    paint.fillStyle = css;
    paint.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = paint.getImageData(0, 0, 1, 1).data;
    return [r, g, b, a / 255];
  };
  const over = (top, below) => {  // `top` (with alpha) composited over an opaque `below`
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const colour = rgba(getComputedStyle(node).backgroundColor);
      if (colour[3] > 0) layers.push(colour);
      if (colour[3] >= 1) break;
    }
    let result = [255, 255, 255, 1];
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  };
  const luminance = ([r, g, b]) => {
    const [R, G, B] = [r, g, b].map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * R + 0.7152 * G + 0.0722 * B;
  };
  const contrast = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  for (const el of document.body.querySelectorAll('*')) {
    const ownText = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!ownText || !shown(el) || el.closest(':disabled, [aria-disabled=true]')) continue;
    if (['SCRIPT', 'STYLE', 'NOSCRIPT', 'OPTION'].includes(el.tagName)) continue;
    const style = getComputedStyle(el);
    const back = background(el);
    const fore = over(rgba(style.color), back);
    const ratio = contrast(fore, back);
    if (ratio < minContrast) {
      out.push(`contrast ${ratio.toFixed(2)}:1 < ${minContrast}:1: ${describe(el)}`
        + ` (${style.color} on rgb(${back.slice(0, 3).map(Math.round).join(', ')}))`);
    }
  }
  return out;
}
"""


def violations(page: Page) -> list[str]:
    """Unlabelled controls, unnamed buttons and links, text below 4.5:1 contrast."""
    found: list[str] = page.evaluate(_CHECK, MIN_CONTRAST)
    return found


# Marks the controls Tab must reach (visible, enabled form controls and buttons, and the first
# link of each navigation) with data-a11y, and records, as focus moves, which of them it reached
# and which focused elements showed no indicator (an outline or a box shadow); done once every
# control was reached or the focus came round to one again.
_WATCH = """
() => {
  const shown = (el) => {
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  const controls = [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, nav a[href]')]
    .filter((el) => shown(el) && !el.disabled && el.tabIndex >= 0);
  const firstLinks = new Set([...document.querySelectorAll('nav')]
    .map((nav) => nav.querySelector('a[href]')).filter(Boolean));
  const wanted = controls.filter((el) => !el.matches('nav a[href]') || firstLinks.has(el));
  wanted.forEach((el, i) => { el.dataset.a11y = String(i); });
  const words = (el) => (el.getAttribute('aria-label') || el.textContent || el.name || '').trim();
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + ` "${words(el).slice(0, 30)}"`;
  const state = { wanted: wanted.map(describe), reached: [], unmarked: [], done: false };
  document.activeElement?.blur();
  window.scrollTo(0, 0);
  document.addEventListener('focusin', (event) => {
    const el = event.target;
    const style = getComputedStyle(el);
    const outlined = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
    const shadowed = style.boxShadow && style.boxShadow !== 'none';
    if (!outlined && !shadowed && !state.unmarked.includes(describe(el))) {
      state.unmarked.push(describe(el));
    }
    const mark = el.dataset.a11y;
    if (mark === undefined) return;
    if (state.reached.includes(mark)) state.done = true;  // round again
    else state.reached.push(mark);
    if (state.reached.length === wanted.length) state.done = true;
  });
  window.__a11yKeyboard = state;
  return wanted.length;
}
"""


def keyboard_violations(page: Page, max_tabs: int = 200, batch: int = 8) -> list[str]:
    """Tab from the top of the page: every visible control (and each navigation's first link)
    must be reached within `max_tabs` presses, and every element Tab lands on must show a
    focus indicator (an outline or a box shadow)."""
    if page.evaluate(_WATCH) == 0:
        return []
    state: dict[str, Any] = {}
    for _ in range(0, max_tabs, batch):
        for _ in range(batch):
            page.keyboard.press("Tab")
        state = page.evaluate("() => window.__a11yKeyboard")
        if state["done"]:
            break
    out = [f"no visible focus indicator: {what}" for what in state["unmarked"]]
    out.extend(
        f"not reachable by Tab: {what}"
        for index, what in enumerate(state["wanted"])
        if str(index) not in state["reached"]
    )
    return out
