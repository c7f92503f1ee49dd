// Shared by the chat page (/ui/chat) and the support widget (/support): element lookup, the API key box
// (remembered in localStorage), the request headers, and a message bubble in #log.
const $ = (id) => document.getElementById(id);
$("key").value = localStorage.getItem("genforge-key") || "";
$("key").onchange = () => localStorage.setItem("genforge-key", $("key").value);
const headers = () => ({"Content-Type": "application/json", "Authorization": "Bearer " + ($("key").value || "none")});
function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  div.appendChild(body);
  $("log").appendChild(div);
  return div;
}
