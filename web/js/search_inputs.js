// Sampler inputs per algorithm: an input whose options carry `noise_search_for` (the algorithms that read it, from the
// node definition) is shown only while the node's algorithm selector names one of them. The selector is the combo
// input listing every algorithm named there, so nothing here names an input or an algorithm. Hidden widgets keep their
// values, are saved in the workflow and sent in the prompt. A widget whose input is linked stays shown (its socket and
// link stay where they are), and every algorithm input stays shown while the selector itself is linked (its value is
// then unknown here). Applied on node creation, on configure (loading, paste, undo), on a selector change and on a
// link change. It wraps only the node's own hooks and its selector's callback: no listener or observer to release.
const { app } = window.comfyAPI.app;

const KEY = "noise_search_for";
const STATE = Symbol("noiseSearchInputs");
const NO_ROW = () => [0, -4];

function comboOptions(spec) {
  if (Array.isArray(spec?.[0])) return spec[0];
  const options = spec?.[1]?.options;
  return spec?.[0] === "COMBO" && Array.isArray(options) ? options : null;
}

// {selector, users: input name -> Set of algorithms} from a node definition; null when no input carries the key.
function algorithmInputs(nodeData) {
  const specs = Object.entries({ ...nodeData.input?.required, ...nodeData.input?.optional });
  const users = new Map();
  for (const [name, spec] of specs) {
    const algorithms = spec?.[1]?.[KEY];
    if (Array.isArray(algorithms)) users.set(name, new Set(algorithms));
  }
  if (!users.size) return null;
  const named = new Set([...users.values()].flatMap((s) => [...s]));
  const selectors = specs
    .filter(([name, spec]) => !users.has(name) && [...named].every((a) => comboOptions(spec)?.includes(a)))
    .map(([name]) => name);
  if (selectors.length !== 1) {
    console.warn(`[Noise Search] ${nodeData.name}: expected one combo input listing the algorithms ${[...named]} ` +
      `named by '${KEY}', found ${selectors.length} (${selectors}); its inputs are all shown.`);
    return null;
  }
  return { selector: selectors[0], users };
}

function isLinked(node, name) {
  const index = node.inputs?.findIndex((input) => (input.widget?.name ?? input.name) === name) ?? -1;
  return index >= 0 && node.isInputConnected(index);
}

// Hides or shows one widget through `widget.hidden`, which the canvas skips when drawing and sizing the node (1.27 and
// later), and which newer frontends (an accessor over the widget's visibility state) also apply to Vue nodes. A
// frontend without `getLayoutWidgets` (1.27) still lays out a hidden widget's row, so the widget gets no height then.
// Only widgets hidden here are shown again. Returns whether anything changed.
function setHidden(node, widget, hide) {
  const hidden = node[STATE].hidden;
  if (hide === hidden.has(widget) || (hide && widget.hidden)) return false;
  const layoutSkipsHidden = typeof node.getLayoutWidgets === "function";
  if (hide) {
    hidden.set(widget, Object.getOwnPropertyDescriptor(widget, "computeSize"));
    if (!layoutSkipsHidden) widget.computeSize = NO_ROW;
  } else {
    const own = hidden.get(widget);
    hidden.delete(widget);
    if (!layoutSkipsHidden) {
      if (own) Object.defineProperty(widget, "computeSize", own);
      else delete widget.computeSize;
    }
  }
  widget.hidden = hide;
  return true;
}

function apply(node, spec) {
  const selector = node.widgets?.find((w) => w.name === spec.selector);
  if (!selector) return false;
  const algorithm = isLinked(node, spec.selector) ? null : selector.value;
  let changed = false;
  for (const widget of node.widgets) {
    const users = spec.users.get(widget.name);
    if (!users) continue;
    const hide = algorithm !== null && !users.has(algorithm) && !isLinked(node, widget.name);
    changed = setHidden(node, widget, hide) || changed;
  }
  return changed;
}

// Applies the selector's choice and grows or shrinks the node by the rows shown or hidden, keeping any extra room.
function refresh(node, spec) {
  const [, before] = node.computeSize();
  if (!apply(node, spec)) return;
  const [width, after] = node.computeSize();
  node.setSize([Math.max(node.size[0], width), Math.max(after, node.size[1] + after - before)]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "NoiseSearch.SearchInputs",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = algorithmInputs(nodeData);
    if (!spec) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const out = onNodeCreated?.apply(this, arguments);
      this[STATE] = { hidden: new Map() };
      const selector = this.widgets?.find((w) => w.name === spec.selector);
      if (selector) {
        const callback = selector.callback;
        const node = this;
        selector.callback = function () {
          const result = callback?.apply(this, arguments);
          refresh(node, spec);
          return result;
        };
      }
      refresh(this, spec);
      return out;
    };
    // Loading keeps the saved size (it fits the saved algorithm), at least the minimum: this also undoes any resize
    // made while configure restored the links, before the saved values were set.
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const out = onConfigure?.apply(this, arguments);
      if (this[STATE]) {
        apply(this, spec);
        const [width, height] = this.computeSize();
        const [w, h] = info?.size ?? this.size;
        this.setSize([Math.max(w, width), Math.max(h, height)]);
      }
      return out;
    };
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const out = onConnectionsChange?.apply(this, arguments);
      if (this[STATE]) refresh(this, spec);
      return out;
    };
  },
});
