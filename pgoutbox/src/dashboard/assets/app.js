// pgoutbox dashboard: the overview's live part, refreshed from the server
// (which renders and escapes it) every `data-refresh` ms, without a reload.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.src) {
    return;
  }
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(live.dataset.src, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        live.innerHTML = await response.text();
        live.dataset.updated = String(Date.now());
      }
    } catch (e) {
      // The server is away for a moment: keep the last picture.
    } finally {
      busy = false;
    }
  }
  const every = Number(live.dataset.refresh) || 2000;
  setInterval(refresh, Math.max(every, 250));
})();
