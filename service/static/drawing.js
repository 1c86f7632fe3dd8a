// The pictures the demo shows, drawn in the browser from the maps /predict returns, with
// the colours of scene_contract/drawing.py (class colours from the model card, the same
// instance hash and depth colour map), so they look as the service's overlay=true pictures do.

const OUTLINE = [255, 255, 255];
const DEPTH_ANCHORS = [[8, 8, 24], [60, 20, 110], [170, 50, 120], [240, 120, 60], [252, 230, 140]];
const MAX_INVERSE_DEPTH = 0.5; // 1/m drawn brightest: 2 m or nearer
export const DEPTH_SKY = 0;
export const DEPTH_INVALID = 65535;

// A stable, distinct colour per instance id (drawing.colorize_instances).
export function instanceColour(id) {
  let h = Math.imul(id, 2654435761) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  return [0, 8, 16].map((shift) => 64 + Math.floor((((h >>> shift) & 255) * 3) / 4));
}

// Inverse depth (1/m; 0 = sky, NaN = none) as a colour, near bright (drawing.colorize_inverse_depth).
export function depthColour(inverse) {
  if (Number.isNaN(inverse)) return [128, 128, 128];
  const x = Math.min(Math.max(inverse / MAX_INVERSE_DEPTH, 0), 1);
  const position = Math.sqrt(x) * (DEPTH_ANCHORS.length - 1);
  const low = Math.min(Math.floor(position), DEPTH_ANCHORS.length - 2);
  const t = position - low;
  return DEPTH_ANCHORS[low].map((c, i) => Math.round(c + t * (DEPTH_ANCHORS[low + 1][i] - c)));
}

function isOutline(ids, i, x, y, width, height) {
  const id = ids[i];
  if (id === 0) return false;
  return (x > 0 && ids[i - 1] !== id) || (x < width - 1 && ids[i + 1] !== id)
    || (y > 0 && ids[i - width] !== id) || (y < height - 1 && ids[i + width] !== id);
}

function blend(out, o, base, colour, alpha) {
  for (let c = 0; c < 3; c++) out[o + c] = Math.round((1 - alpha) * base[o + c] + alpha * colour[c]);
  out[o + 3] = 255;
}

function put(out, o, colour) {
  out[o] = colour[0];
  out[o + 1] = colour[1];
  out[o + 2] = colour[2];
  out[o + 3] = 255;
}

// `photo` is ImageData of the maps' size; `palette` maps train id -> [r, g, b].
export function classPicture(photo, semantic, instances, palette, alpha) {
  const { width, height } = photo;
  const out = new ImageData(width, height);
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      const o = 4 * i;
      if (instances && isOutline(instances.values, i, x, y, width, height)) {
        put(out.data, o, OUTLINE);
      } else {
        blend(out.data, o, photo.data, palette.get(semantic.values[i]) ?? [0, 0, 0], alpha);
      }
    }
  }
  return out;
}

export function instancePicture(photo, instances, alpha) {
  const { width, height } = photo;
  const out = new ImageData(width, height);
  const colours = new Map();
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i++) {
      const o = 4 * i;
      const id = instances.values[i];
      if (isOutline(instances.values, i, x, y, width, height)) {
        put(out.data, o, OUTLINE);
      } else if (id === 0) {
        put(out.data, o, photo.data.subarray(o, o + 3));
      } else {
        if (!colours.has(id)) colours.set(id, instanceColour(id));
        blend(out.data, o, photo.data, colours.get(id), alpha);
      }
    }
  }
  return out;
}

// `depth`: the depth PNG's values (metres / scale; DEPTH_SKY, DEPTH_INVALID special).
export function depthPicture(depth, scaleToMetres) {
  const out = new ImageData(depth.width, depth.height);
  const cache = new Map();
  for (let i = 0; i < depth.values.length; i++) {
    const value = depth.values[i];
    if (!cache.has(value)) {
      const inverse = value === DEPTH_SKY ? 0 : value === DEPTH_INVALID ? NaN : 1 / (value * scaleToMetres);
      cache.set(value, depthColour(inverse));
    }
    put(out.data, 4 * i, cache.get(value));
  }
  return out;
}
