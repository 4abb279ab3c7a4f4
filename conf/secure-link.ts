/**
 * The syntax of nginx's `secure_link` / `secure_link_md5` complex values (`"$a$b literal ${c}"`) and the
 * variables flashgate supports in them. At load, so that `validate` refuses what the guard cannot compile;
 * antibot/nginx-secure-link.ts turns the parts into readers of a request.
 */

/** Literal text, or a variable (its name without `$`). */
export type TemplatePart = { readonly text: string } | { readonly variable: string }

/** Variables read as nginx reads them; `arg_*`, `http_*` and `cookie_*` are families. */
export const SECURE_LINK_VARIABLES: readonly string[] = ['uri', 'request_uri', 'args', 'query_string', 'remote_addr', 'host', 'request_method', 'secure_link_expires']
const FAMILIES = ['arg_', 'http_', 'cookie_']

export function supportedVariable (name: string): boolean {
  return SECURE_LINK_VARIABLES.includes(name) || FAMILIES.some((f) => name.startsWith(f) && name.length > f.length)
}

/**
 * Parse a complex value into parts. Throws an Error whose message says what is wrong; the message never
 * repeats the value (secure_link_md5 holds the secret).
 */
export function parseSecureLinkTemplate (tpl: string): TemplatePart[] {
  let s = tpl.trim()
  if (s.length >= 2 && ((s[0] === '"' && s.endsWith('"')) || (s[0] === "'" && s.endsWith("'")))) s = s.slice(1, -1)
  const parts: TemplatePart[] = []
  let lit = ''
  let i = 0
  while (i < s.length) {
    const c = s[i] as string
    if (c !== '$') { lit += c; i++; continue }
    let name: string
    if (s[i + 1] === '{') {
      const close = s.indexOf('}', i + 2)
      if (close === -1) throw new Error('unclosed ${')
      name = s.slice(i + 2, close)
      i = close + 1
    } else {
      let j = i + 1
      while (j < s.length && /[A-Za-z0-9_]/.test(s[j] as string)) j++
      name = s.slice(i + 1, j)
      i = j
    }
    if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error('invalid variable name after $')
    if (!supportedVariable(name)) throw new Error(`unsupported variable $${name} (supported: $${SECURE_LINK_VARIABLES.join(', $')}, $arg_NAME, $http_NAME, $cookie_NAME)`)
    if (lit !== '') { parts.push({ text: lit }); lit = '' }
    parts.push({ variable: name })
  }
  if (lit !== '') parts.push({ text: lit })
  return parts
}
