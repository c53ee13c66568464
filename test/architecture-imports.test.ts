import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The folders show the architecture: data flows one way (web -> shared <- coordinator, bin -> both), and no module
 * imports itself back through others (type-only imports included: a circle of types is still two concepts that
 * cannot be read apart).
 */

const ROOTS = ['coordinator', 'shared', 'web', 'bin'];
const SOURCE = /\.(ts|mjs|svelte)$/;
const IMPORT =
  /(?:import|export)\s[^'"`;]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (SOURCE.test(name) && !name.endsWith('.d.ts')) out.push(normalize(p));
  }
  return out;
}

function resolveImport(from: string, spec: string): string | null {
  const base = normalize(join(dirname(from), spec));
  for (const cand of [base, base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')]) {
    if (existsSync(cand) && statSync(cand).isFile()) return cand;
  }
  return null;
}

function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of ROOTS.flatMap((r) => sources(r))) {
    const deps: string[] = [];
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const target = resolveImport(file, m[1] ?? m[2]);
      if (target) deps.push(target);
    }
    graph.set(file, deps);
  }
  return graph;
}

/** Strongly connected components with more than one module (Tarjan). */
function circles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe('architecture', () => {
  const graph = importGraph();

  it('sees the modules and their imports', () => {
    expect(graph.size).toBeGreaterThan(100);
    expect(graph.get(normalize('coordinator/app.ts'))?.length).toBeGreaterThan(10);
  });

  it('has no import circles (the scheduler and verification meet in scheduler/hooks.ts)', () => {
    expect(circles(graph)).toEqual([]);
  });

  it('data flows one way: shared imports neither side, web and coordinator never import each other', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      const layer = file.split(/[\\/]/)[0];
      for (const dep of deps) {
        const to = dep.split(/[\\/]/)[0];
        const allowed =
          layer === to || to === 'shared' || (layer === 'bin' && (to === 'coordinator' || to === 'web')) || false;
        if (!allowed) wrong.push(`${relative('.', file)} -> ${relative('.', dep)}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
