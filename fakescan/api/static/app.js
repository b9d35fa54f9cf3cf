// fakescan review page: the next gallery page on scroll, reviews and overlays on key presses.
"use strict";

function initGallery() {
  const gallery = document.getElementById("gallery");
  const end = document.getElementById("gallery-end");
  if (!gallery || !end) return;
  let loading = false;
  const observer = new IntersectionObserver(async (entries) => {
    const cursor = gallery.dataset.nextCursor;
    if (!entries.some((e) => e.isIntersecting) || loading || !cursor) return;
    loading = true;
    const response = await fetch(`/gallery/more?${gallery.dataset.apiQuery}&cursor=${encodeURIComponent(cursor)}`);
    if (response.ok) {
      gallery.insertAdjacentHTML("beforeend", await response.text());
      gallery.dataset.nextCursor = response.headers.get("X-Next-Cursor") || "";
      if (!gallery.dataset.nextCursor) end.textContent = "end of results";
    } else {
      end.textContent = `could not load more (${response.status})`;
    }
    loading = false;
    // still in view after a short page: observing afresh reports it again and loads the next one
    observer.unobserve(end);
    observer.observe(end);
  }, { rootMargin: "400px" });
  observer.observe(end);
}

async function recordReview(objectId, decision) {
  const status = document.getElementById("review-status");
  const note = document.getElementById("review-note");
  status.textContent = `recording ${decision}…`;
  const response = await fetch("/api/v1/reviews", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ object_id: Number(objectId), decision, note: note && note.value ? note.value : null }),
  });
  const body = await response.json();
  if (!response.ok) {
    status.textContent = `not recorded: ${body.detail}`;
    return;
  }
  status.textContent = `recorded: ${body.decision} by ${body.reviewer}`;
  status.dataset.recorded = body.decision;
  const item = document.createElement("li");
  item.textContent = `${body.created_at} ${body.reviewer}: ${body.decision}${body.note ? ` (${body.note})` : ""}`;
  document.getElementById("review-history").prepend(item);
}

async function showOverlay(objectId, detector) {
  const status = document.getElementById("overlay-status");
  status.textContent = `computing the ${detector} overlay…`;
  const response = await fetch(`/api/v1/objects/${objectId}/overlays/${encodeURIComponent(detector)}`);
  const body = await response.json();
  if (!response.ok) {
    status.textContent = `no overlay: ${body.detail}`;
    return;
  }
  const [name, url] = Object.entries(body.overlays)[0];
  const overlay = document.getElementById("overlay-image");
  overlay.src = url;
  overlay.hidden = false;
  status.textContent = `${name} of ${detector}@${body.version}`;
}

function initObject() {
  const page = document.getElementById("object");
  if (!page) return;
  const objectId = page.dataset.objectId;
  const buttons = Array.from(document.querySelectorAll(".review-button"));
  buttons.forEach((b) => b.addEventListener("click", () => recordReview(objectId, b.dataset.decision)));
  const overlayButtons = Array.from(document.querySelectorAll(".overlay-button"));
  overlayButtons.forEach((b) => b.addEventListener("click", () => showOverlay(objectId, b.dataset.detector)));
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
    const button = buttons.find((b) => b.dataset.key === event.key);
    if (button) {
      event.preventDefault();
      recordReview(objectId, button.dataset.decision);
    } else if (event.key === "o" && overlayButtons.length) {
      showOverlay(objectId, overlayButtons[0].dataset.detector);
    } else if (event.key === "g") {
      window.location = "/gallery";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initGallery();
  initObject();
});
