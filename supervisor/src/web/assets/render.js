// phibox answer rendering: a small markdown subset (headings, paragraphs, bullet and numbered
// lists, **bold**, *italic*, `code`) built as DOM nodes with textContent only — the model's
// text is never parsed as HTML, so nothing in it can become markup or script. Hand-written on
// purpose: markdown libraries produce HTML strings that would then need a sanitizer, and the
// box is offline (no CDN), so the few lines here are the smaller thing to trust.
"use strict";
(function () {
  function inline(parent, text) {
    // **bold**, *italic* or _italic_, `code`; anything unmatched stays literal text.
    const re = /(\*\*([^*]+)\*\*|`([^`]+)`|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_)/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      let el;
      if (m[2] !== undefined) { el = document.createElement("strong"); el.textContent = m[2]; }
      else if (m[3] !== undefined) { el = document.createElement("code"); el.textContent = m[3]; }
      else { el = document.createElement("em"); el.textContent = m[4] !== undefined ? m[4] : m[5]; }
      parent.appendChild(el);
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function render(target, text) {
    const out = document.createDocumentFragment();
    let para = null;
    let list = null;
    const close = () => { para = null; list = null; };
    for (const raw of text.split("\n")) {
      const line = raw.trimEnd();
      let m;
      if (line.trim() === "") { close(); continue; }
      if ((m = /^(#{1,3})\s+(.*)$/.exec(line))) {
        close();
        const h = document.createElement("h" + (m[1].length + 2));
        inline(h, m[2]);
        out.appendChild(h);
      } else if ((m = /^\s*[-*•]\s+(.*)$/.exec(line)) || (m = /^\s*(\d+)[.)]\s+(.*)$/.exec(line))) {
        const ordered = m.length === 3;
        const tag = ordered ? "OL" : "UL";
        if (!list || list.tagName !== tag) {
          para = null;
          list = document.createElement(tag.toLowerCase());
          out.appendChild(list);
        }
        const li = document.createElement("li");
        inline(li, ordered ? m[2] : m[1]);
        list.appendChild(li);
      } else {
        list = null;
        if (!para) {
          para = document.createElement("p");
          out.appendChild(para);
        } else {
          para.appendChild(document.createElement("br"));
        }
        inline(para, line);
      }
    }
    target.replaceChildren(out);
  }

  window.phiboxRender = render;
  for (const el of document.querySelectorAll("[data-md]")) render(el, el.textContent);
})();
