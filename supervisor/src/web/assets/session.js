// phibox idle lock: asks the server how much inactivity is left (without counting as activity)
// and, when the session has ended, removes every element holding conversation text from the
// page before going to the sign-in page. Typing and clicking count as activity (reported at
// most once a minute).
"use strict";
(function () {
  const csrf = document.body.dataset.csrf;
  if (!csrf) return;
  let lastReport = Date.now();

  function lock() {
    for (const el of document.querySelectorAll("[data-phi]")) {
      if ("value" in el) el.value = "";
      el.textContent = "";
      el.remove();
    }
    document.body.classList.add("locked");
    location.replace("/login?expired=1");
  }

  async function poll() {
    try {
      const res = await fetch("/api/session", { cache: "no-store" });
      // Only the server's answer locks the page: by then the session has ended there too.
      if (res.status === 401) return lock();
      const s = await res.json();
      setTimeout(poll, Math.min(30000, Math.max(250, s.idle_left * 1000 + 250)));
    } catch (e) {
      setTimeout(poll, 10000);
    }
  }

  function activity() {
    const now = Date.now();
    if (now - lastReport < 60000) return;
    lastReport = now;
    fetch("/api/activity", { method: "POST", headers: { "X-CSRF-Token": csrf } });
  }

  // A page left behind (back/forward cache) must not keep conversation text: it is removed
  // when the page is hidden, and a page restored from the cache is fetched anew, so the server
  // decides whether the session still stands.
  window.addEventListener("pagehide", () => {
    for (const el of document.querySelectorAll("[data-phi]")) el.remove();
  });
  window.addEventListener("pageshow", (ev) => {
    if (ev.persisted) {
      document.body.hidden = true;
      location.reload();
    }
  });

  for (const type of ["keydown", "pointerdown", "input"]) {
    document.addEventListener(type, activity, { passive: true });
  }
  poll();
})();
