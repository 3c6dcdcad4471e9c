// Times are written by the server in UTC (<time class="local" datetime="...Z">, and
// datetime-local inputs with data-utc): this shows them in the reader's own time zone and
// language, and sends the zone's offset with every form that has a time in it (the hidden
// "tz" field; without this script the forms say their times are UTC).

const lang = document.documentElement.lang || undefined;
const format = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });

function pad(n) {
  return String(n).padStart(2, "0");
}

function inputValue(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export function localize(root = document) {
  for (const el of root.querySelectorAll("time.local[datetime]")) {
    const date = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(date.getTime())) el.textContent = format.format(date);
  }
  for (const input of root.querySelectorAll("input[type=datetime-local][data-utc]")) {
    if (input.dataset.localized) continue;
    const date = new Date(input.dataset.utc);
    if (!Number.isNaN(date.getTime())) input.value = inputValue(date);
    input.dataset.localized = "1";
  }
  for (const note of root.querySelectorAll("[data-utc-note]")) note.hidden = true;
}

// The offset of the time typed, not of today: daylight saving may differ.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const tz = form.querySelector("input[name=tz]");
  if (!tz) return;
  const typed = [...form.querySelectorAll("input[type=datetime-local]")].find((i) => i.value);
  const date = typed ? new Date(typed.value) : new Date();
  tz.value = String(date.getTimezoneOffset());
}, true);

document.addEventListener("click", (event) => {
  if (event.target.closest("[data-print]")) window.print();
});

localize();
