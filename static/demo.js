// The board works without this file; it only adds keyboard niceties.
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
