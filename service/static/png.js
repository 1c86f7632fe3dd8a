// Reads the service's map PNGs (greyscale, 8 or 16 bits, not interlaced) into typed arrays.
// A canvas cannot: browsers decode 16-bit PNGs to 8 bits, which loses instance ids and depth.
// The deflate stream is inflated by the browser's DecompressionStream.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function paeth(left, up, upLeft) {
  const p = left + up - upLeft;
  const pa = Math.abs(p - left);
  const pb = Math.abs(p - up);
  const pc = Math.abs(p - upLeft);
  if (pa <= pb && pa <= pc) return left;
  return pb <= pc ? up : upLeft;
}

// Undo the per-row filters (PNG spec, section 9) in place; returns the rows without filter bytes.
function unfilter(raw, height, rowBytes, pixelBytes) {
  const out = new Uint8Array(height * rowBytes);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (rowBytes + 1)];
    const src = y * (rowBytes + 1) + 1;
    const row = y * rowBytes;
    const prev = row - rowBytes;
    for (let x = 0; x < rowBytes; x++) {
      const value = raw[src + x];
      const left = x >= pixelBytes ? out[row + x - pixelBytes] : 0;
      const up = y > 0 ? out[prev + x] : 0;
      const upLeft = x >= pixelBytes && y > 0 ? out[prev + x - pixelBytes] : 0;
      let predicted = 0;
      if (filter === 1) predicted = left;
      else if (filter === 2) predicted = up;
      else if (filter === 3) predicted = (left + up) >> 1;
      else if (filter === 4) predicted = paeth(left, up, upLeft);
      else if (filter !== 0) throw new Error(`PNG row ${y} has unknown filter ${filter}`);
      out[row + x] = (value + predicted) & 255;
    }
  }
  return out;
}

// {width, height, values}: values is a Uint8Array (8-bit) or Uint16Array (16-bit), row-major.
export async function decodeGreyPng(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  if (!SIGNATURE.every((b, i) => bytes[i] === b)) throw new Error("not a PNG");
  const view = new DataView(bytes.buffer);
  let width = 0, height = 0, bitDepth = 0;
  const data = [];
  for (let at = 8; at < bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      bitDepth = body[8];
      const colourType = body[9], interlace = body[12];
      if (colourType !== 0 || interlace !== 0 || (bitDepth !== 8 && bitDepth !== 16)) {
        throw new Error(`unsupported PNG: colour type ${colourType}, ${bitDepth} bits, interlace ${interlace}`);
      }
    } else if (type === "IDAT") {
      data.push(body);
    } else if (type === "IEND") {
      break;
    }
    at += 12 + length;
  }
  const pixelBytes = bitDepth / 8;
  const raw = await inflate(new Blob(data));
  const rows = unfilter(raw, height, width * pixelBytes, pixelBytes);
  if (bitDepth === 8) return { width, height, values: rows };
  const values = new Uint16Array(width * height);
  for (let i = 0; i < values.length; i++) values[i] = (rows[2 * i] << 8) | rows[2 * i + 1];
  return { width, height, values };
}
