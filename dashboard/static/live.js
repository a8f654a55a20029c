// The overview's live message feed: server-sent events from /events, one <li> per message.
// Text goes in with textContent only, never as HTML.
(function () {
  "use strict";
  var feed = document.getElementById("feed");
  var state = document.getElementById("live-state");
  if (!feed || !window.EventSource) { return; }
  var source = new EventSource("/events");
  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }
  source.addEventListener("open", function () { state.textContent = "(live)"; });
  source.addEventListener("error", function () { state.textContent = "(reconnecting…)"; });
  source.addEventListener("message", function (event) {
    var m = JSON.parse(event.data);
    var li = document.createElement("li");
    li.appendChild(span("when", m.at));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(span("group", m.group));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(span("sender", m.sender));
    li.appendChild(document.createTextNode(": "));
    li.appendChild(span("text", m.text));
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > 50) { feed.removeChild(feed.lastChild); }
  });
})();
