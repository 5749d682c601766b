// A full-page PNG of a monitoring report (reports/dt=D/report.html) in headless Chromium, for
// the docs. Usage: node shot.mjs REPORT.html OUT.png
//
// The Chromium is the one @sparticuz/chromium ships inside its npm tarball (built for AWS
// Lambda, runs on a plain Linux too), driven by puppeteer-core: no browser download, no system
// package. The report's plots are base64 PNGs (src/propensity/monitoring/report.py); the shot
// is taken once every image has decoded, and a plot that did not decode is an error, not a PNG
// with a hole in it.
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";

const WIDTH = 1280;
const TIMEOUT_MS = 60_000;

function usage(message) {
  console.error(`shot.mjs: ${message}\nusage: node shot.mjs REPORT.html OUT.png`);
  process.exit(2);
}

function parseArgs(argv) {
  if (argv.length !== 2) usage(`expected 2 arguments, got ${argv.length}`);
  const [input, output] = argv.map((p) => resolve(p));
  if (!existsSync(input) || !statSync(input).isFile()) usage(`report not found: ${input}`);
  if (!output.endsWith(".png")) usage(`output must end in .png: ${output}`);
  if (!existsSync(dirname(output))) usage(`output folder does not exist: ${dirname(output)}`);
  return { input, output };
}

// @sparticuz/chromium unpacks its binary under os.tmpdir() and reuses whatever `chromium` it
// finds there, whichever version that is. Unpacking inside node_modules instead ties the binary
// to the installed package: `npm ci` removes it together with the package it came from.
function privateTmpdir() {
  const here = dirname(fileURLToPath(import.meta.url));
  process.env.TMPDIR = join(here, "node_modules", ".chromium");
  mkdirSync(process.env.TMPDIR, { recursive: true });
}

// Every <img> decoded with a size, fonts loaded; returns the failed ones, numbered from 1 in
// page order.
async function waitForPlots(page) {
  return page.evaluate(async () => {
    await document.fonts.ready;
    const images = [...document.images];
    const results = await Promise.allSettled(images.map((img) => img.decode()));
    const broken = images
      .map((img, i) => ({ i, ok: results[i].status === "fulfilled" && img.naturalWidth > 0 }))
      .filter((r) => !r.ok)
      .map((r) => r.i + 1);
    return { count: images.length, broken };
  });
}

async function shoot({ input, output }) {
  privateTmpdir();
  const browser = await puppeteer.launch({
    args: puppeteer.defaultArgs({ args: chromium.args, headless: "shell" }),
    executablePath: await chromium.executablePath(),
    headless: "shell",
    defaultViewport: { width: WIDTH, height: 800, deviceScaleFactor: 1 },
  });
  const partial = `${output}.partial.png`;
  try {
    // The first tab: chromium.args include --single-process, where opening a new one can fail.
    const [page] = await browser.pages();
    await page.goto(pathToFileURL(input).href, { waitUntil: "load", timeout: TIMEOUT_MS });
    const { count, broken } = await waitForPlots(page);
    if (count === 0) throw new Error(`no plots (<img>) in ${input}: not a monitoring report?`);
    if (broken.length) {
      const which = `plot(s) ${broken.join(", ")} of ${count} (in page order)`;
      throw new Error(`${which} did not render in ${input}`);
    }
    const { width, height } = await page.evaluate(() => ({
      width: document.documentElement.scrollWidth,
      height: document.documentElement.scrollHeight,
    }));
    // Puppeteer's fullPage widens the shot to the content; a reader's window does not, so the
    // shot keeps the window's width and says what it cut off.
    if (width > WIDTH) {
      console.error(`shot.mjs: warning: ${input} is ${width} px wide, wider than the ` +
        `${WIDTH} px window: the PNG shows the first ${WIDTH} px, as a reader's window would`);
    }
    // Written aside and renamed, so that a failed run leaves no PNG that looks complete.
    await page.screenshot({
      path: partial,
      type: "png",
      clip: { x: 0, y: 0, width: WIDTH, height },
      captureBeyondViewport: true,
    });
    renameSync(partial, output);
    console.log(`${output}: ${WIDTH}x${height} px, ${count} plots`);
  } finally {
    rmSync(partial, { force: true });
    await browser.close();
  }
}

try {
  await shoot(parseArgs(process.argv.slice(2)));
} catch (error) {
  console.error(`shot.mjs: ${error.message}`);
  process.exit(1);
}
