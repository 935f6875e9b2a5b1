// The board works without this file; it only adds keyboard and typing niceties.

// Escape cancels an inline edit (the Cancel link does the same).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const form = event.target.closest && event.target.closest(".edit-form");
  const cancel = form && form.querySelector("[data-cancel]");
  if (cancel) {
    event.preventDefault();
    cancel.click();
  }
});

// Enter on the empty add box right after a todo was added (Enter pressed twice) adds nothing
// and shows no "Give the todo a title." error; once the user types, Enter submits as usual.
let justAdded = false;

document.addEventListener("htmx:after:request", (event) => {
  const ctx = event.detail && event.detail.ctx;
  // getAttribute: a form's .id is its input named "id" (the command's idempotency key).
  if (event.target.getAttribute("id") === "add-form" && ctx && ctx.response) {
    justAdded = ctx.response.status === 201;
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !event.target.matches || !event.target.matches("#title")) return;
  if (justAdded && event.target.value.trim() === "") event.preventDefault();
});

// The length hint under the add box: how many characters are left as the limit nears, and a
// word when a paste was cut at the limit (the browser cuts it silently).
const HINT_WITHIN = 20;

function lengthHint(input, cut) {
  const hint = input.form && input.form.querySelector(".length-hint");
  const max = input.maxLength;
  if (!hint || max <= 0) return;
  const left = max - input.value.length;
  let text = "";
  if (cut) text = `The pasted text was cut to ${max} characters, the limit.`;
  else if (left <= 0) text = `${max} characters: the limit.`;
  else if (left <= HINT_WITHIN) text = `${left} character${left === 1 ? "" : "s"} left.`;
  hint.textContent = text;
  hint.hidden = text === "";
  hint.classList.toggle("at-limit", left <= 0);
}

document.addEventListener("input", (event) => {
  const input = event.target;
  if (!input.matches || !input.matches("#title")) return;
  justAdded = false;
  lengthHint(input, false);
});

document.addEventListener("paste", (event) => {
  const input = event.target;
  if (!input.matches || !input.matches("#title") || input.maxLength <= 0) return;
  const pasted = (event.clipboardData || window.clipboardData).getData("text");
  const kept = input.value.length - (input.selectionEnd - input.selectionStart);
  if (kept + pasted.length > input.maxLength) {
    setTimeout(() => lengthHint(input, true)); // after the browser has inserted what fits
  }
});
