// phibox chat: sends the form as JSON, streams the answer (server-sent events over fetch, so
// the CSRF header can be sent), shows it through render.js's markdown subset (DOM nodes and
// textContent, never HTML), and stops on request.
"use strict";
(function () {
  const form = document.getElementById("chat");
  const reply = document.getElementById("reply");
  const status = document.getElementById("status");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  let controller = null;
  let text = "";
  let pending = false;

  function show() {
    pending = false;
    window.phiboxRender(reply, text);
  }

  function busy(on) {
    send.disabled = on;
    stop.disabled = !on;
  }

  function handle(raw) {
    let name = "message";
    let data = "";
    for (const line of raw.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trimStart();
    }
    if (!data) return;
    const value = JSON.parse(data);
    if (name === "token") {
      text += value;
      if (!pending) { pending = true; requestAnimationFrame(show); }
    }
    else if (name === "done") status.textContent = value.finish === "cancelled" ? "Stopped." : "Done.";
    else if (name === "error") status.textContent = "Error: " + value;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    text = "";
    reply.textContent = "";
    status.textContent = "Working…";
    controller = new AbortController();
    busy(true);
    try {
      const res = await fetch("/api/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
        body: JSON.stringify({ template: form.template.value, text: form.text.value }),
        signal: controller.signal,
      });
      if (!res.ok) {
        const body = await res.json().catch(() => ({ error: res.statusText }));
        status.textContent = body.error;
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          handle(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      status.textContent = e.name === "AbortError" ? "Stopped." : "Connection lost.";
    } finally {
      show();
      busy(false);
      controller = null;
    }
  });

  stop.addEventListener("click", () => {
    if (controller) controller.abort();
  });
})();
