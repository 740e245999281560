// Building elements: text always goes in as textContent, so data is never parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function setText(id, text) {
  document.getElementById(id).textContent = text;
}

export function seconds(from, to) {
  return Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000);
}

export function duration(total) {
  if (total < 10) {
    return `${total.toFixed(1)} s`;
  }
  if (total < 60) {
    return `${Math.round(total)} s`;
  }
  const minutes = Math.floor(total / 60);
  if (minutes < 60) {
    return `${minutes} min ${Math.round(total % 60)} s`;
  }
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function ago(iso, now) {
  return iso ? `${duration(seconds(iso, now))} ago` : "never";
}

export function percent(ratio) {
  return `${Math.round(ratio * 100)} %`;
}
