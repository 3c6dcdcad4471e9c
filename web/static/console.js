// Live updates of the staff consoles: the server pushes "changed" notices (Server-Sent
// Events, /console/events); each refetches this page and swaps in the parts marked
// data-live, leaving forms being filled in untouched. Without JavaScript the page still works
// (every form posts and comes back).

import { localize } from "./localtime.js";

const root = document.getElementById("console");
const refreshUrl = root ? root.dataset.refreshUrl : null;
let pending = null;
let refreshes = 0;

// A part holding a form someone is typing in is left alone, and fetched again a moment later.
function busy(part) {
  if (part.contains(document.activeElement) && document.activeElement !== document.body) {
    return true;
  }
  return [...part.querySelectorAll("input, textarea, select")].some((field) =>
    field.type !== "hidden" && field.dataset.touched === "1");
}

document.addEventListener("input", (event) => {
  if (event.target.dataset) event.target.dataset.touched = "1";
});

async function refresh() {
  pending = null;
  let response;
  try {
    response = await fetch(refreshUrl, { credentials: "same-origin", headers: { Accept: "text/html" } });
  } catch {
    return; // the stream reconnects and the next notice tries again
  }
  if (response.redirected && new URL(response.url).pathname === "/login") {
    window.location.assign("/login");
    return;
  }
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  let deferred = false;
  for (const part of document.querySelectorAll("[data-live]")) {
    const replacement = fresh.querySelector(`[data-live="${part.dataset.live}"]`);
    if (!replacement) continue;
    if (busy(part)) {
      deferred = true;
      continue;
    }
    const node = document.importNode(replacement, true);
    part.replaceWith(node);
    localize(node);
  }
  refreshes += 1;
  document.body.dataset.refreshes = String(refreshes);
  if (deferred) pending = setTimeout(refresh, 3000);
}

function schedule() {
  // A burst of notices (a form that changes several things) is one refetch.
  if (pending === null) pending = setTimeout(refresh, 100);
}

if (refreshUrl) {
  // The notice that brought the page back from a form is shown once, not on every reload.
  if (window.location.search.includes("done=")) {
    window.history.replaceState(null, "", refreshUrl);
  }
  const source = new EventSource("/console/events");
  source.addEventListener("changed", schedule);
  source.addEventListener("open", () => {
    // Notices sent while the stream was down are lost: catch up once it is back.
    if (document.body.dataset.live === "off") schedule();
    document.body.dataset.live = "on";
  });
  source.addEventListener("error", () => { document.body.dataset.live = "off"; });
}
