// Read the text chunks of a PNG in the browser: ComfyUI (and nodegraph) store the editor workflow in a `workflow`
// chunk and the API prompt in a `prompt` chunk (tEXt; iTXt when the text is not Latin-1).

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(bytes) {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** {keyword: text} of every tEXt, zTXt and iTXt chunk (text decoded as UTF-8, as ComfyUI writes it). */
export async function pngTextChunks(buffer) {
  const bytes = new Uint8Array(buffer);
  if (!isPng(bytes)) throw new Error("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8");
  const chunks = {};
  let offset = 8;
  while (offset + 12 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    offset += 12 + length;
    if (type === "IEND") break;
    if (type !== "tEXt" && type !== "iTXt" && type !== "zTXt") continue;
    const nul = data.indexOf(0);
    if (nul < 0) continue;
    const keyword = utf8.decode(data.subarray(0, nul));
    if (type === "tEXt") {
      chunks[keyword] = utf8.decode(data.subarray(nul + 1));
    } else if (type === "zTXt") {
      chunks[keyword] = utf8.decode(await inflate(data.subarray(nul + 2)));
    } else {
      const compressed = data[nul + 1] === 1;
      let rest = nul + 3;
      rest = data.indexOf(0, rest) + 1; // language tag
      rest = data.indexOf(0, rest) + 1; // translated keyword
      if (rest <= 0) continue;
      const text = data.subarray(rest);
      chunks[keyword] = utf8.decode(compressed ? await inflate(text) : text);
    }
  }
  return chunks;
}

/** The workflow a PNG carries: {workflow} (editor graph, preferred) or {prompt} (API), or null. */
export async function workflowFromPng(buffer) {
  const chunks = await pngTextChunks(buffer);
  for (const key of ["workflow", "prompt"]) {
    if (!chunks[key]) continue;
    try {
      const parsed = JSON.parse(chunks[key]);
      if (parsed && typeof parsed === "object") return { [key]: parsed };
    } catch {
      // a chunk that is not JSON: try the other one
    }
  }
  return null;
}
