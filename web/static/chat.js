// The call's chat: a panel beside the tiles. Everything anyone wrote (and their name) is set
// with textContent only, so a message is text whatever it contains. The server keeps the
// chat and hands a newcomer (or this page after a reload) the history; messages are kept
// by id, so history and live messages never show twice.

import { $ } from "./ui.js";

const MAX_CHARS = 2000;

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class ChatPanel {
  /** @param {{t: Function, send: (msg: object) => boolean, self: () => object|null,
   *           toasts: object}} opts */
  constructor({ t, send, self, toasts }) {
    this.t = t;
    this.send = send;
    this.self = self;
    this.toasts = toasts;
    this.panel = $("chat-panel");
    this.list = $("chat-list");
    this.input = $("chat-input");
    this.button = $("chat-btn");
    this.unreadBadge = $("chat-unread");
    /** id -> entry, in order of arrival */
    this.messages = new Map();
    this.unread = 0;
    this.button.addEventListener("click", () => this.toggle());
    $("chat-close").addEventListener("click", () => this.toggle(false));
    $("chat-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      }
    });
    this.render();
  }

  get open() {
    return !this.panel.hidden;
  }

  toggle(open = !this.open) {
    this.panel.hidden = !open;
    this.button.setAttribute("aria-pressed", String(open));
    this.button.classList.toggle("active", open);
    if (open) {
      this.unread = 0;
      this.updateBadge();
      this.list.scrollTop = this.list.scrollHeight;
      this.input.focus();
    }
  }

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (this.send({ type: "chat", text: text.slice(0, MAX_CHARS) })) this.input.value = "";
  }

  /** `chat_history`: the consultation's chat so far (after joining, or a reload). */
  onHistory(messages) {
    for (const m of messages) this.messages.set(m.id, m);
    this.render();
  }

  /** `chat`: one new message, to everyone (our own comes back too). */
  onMessage(m) {
    if (this.messages.has(m.id)) return;
    this.messages.set(m.id, m);
    this.append(m);
    const mine = m.participantId === this.self()?.id;
    if (!this.open && !mine) {
      this.unread += 1;
      this.updateBadge();
      const name = m.name || this.t("role.unknown");
      const text = m.text.length > 80 ? `${m.text.slice(0, 80)}…` : m.text;
      this.toasts.show(this.t("chat.new", { name, text }));
    }
  }

  /** A new session on this page: what was shown stays, the server resends the history. */
  reset() {
    this.render();
  }

  render() {
    this.list.replaceChildren();
    if (this.messages.size === 0) {
      this.list.appendChild(el("li", "chat-empty", this.t("chat.empty")));
      return;
    }
    for (const m of this.messages.values()) this.append(m);
  }

  append(m) {
    this.list.querySelector(".chat-empty")?.remove();
    const li = el("li", "chat-message");
    li.dataset.id = m.id;
    if (m.participantId === this.self()?.id) li.classList.add("mine");
    const head = el("div", "chat-meta");
    head.appendChild(el("span", "chat-name", m.name || this.t("role.unknown")));
    const role = el("span", `role-badge role-${/^[a-z_]+$/.test(m.role) ? m.role : "unknown"}`);
    const label = this.t(`role.${m.role}`);
    role.textContent = label === `role.${m.role}` ? this.t("role.unknown") : label;
    head.appendChild(role);
    const at = new Date(m.at * 1000);
    head.appendChild(
      el("time", "chat-time", at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
    );
    li.append(head, el("p", "chat-text", m.text));
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.appendChild(li);
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  updateBadge() {
    this.unreadBadge.hidden = this.unread === 0;
    this.unreadBadge.textContent = String(this.unread);
  }
}
