<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}} · M-Pesa console</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 0 2rem 3rem; color: #1c1c1c; }
  header { display: flex; gap: 1rem; align-items: center; border-bottom: 2px solid #3a8a3a; padding: .6rem 0; }
  header h1 { font-size: 1.1rem; margin: 0; flex: 1; }
  h2 { font-size: 1rem; margin: 1.6rem 0 .4rem; }
  table { border-collapse: collapse; margin: .2rem 0 1rem; }
  th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
  th { background: #f1f5f1; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 0 2rem; }
  .message { background: #e7f5e7; padding: .5rem; } .error { background: #fbe4e4; padding: .5rem; }
  pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; max-width: 60rem; }
  form.inline { display: inline; }
  time { white-space: nowrap; }
  tr.failing td { background: #fbe4e4; }
</style>
</head>
<body>
<header>
  <h1><a href="/console">M-Pesa console</a></h1>
  % if defined('operator'):
  <a href="/console/new-payout">New payout</a>
  <a href="/console/approvals">Approvals</a>
  <a href="/console/batches">Bulk payouts</a>
  <a href="/console/events">Outbound events</a>
  <a href="/console/c2b">C2B payments</a>
  <form method="get" action="/console"><input name="q" placeholder="any id, receipt, phone or user" value="{{get('search_text', '')}}" size="32"> <button>Search</button></form>
  <span>signed in as <b>{{operator}}</b></span>
  <form method="post" action="/console/logout" class="inline"><input type="hidden" name="csrf" value="{{csrf}}"><button>Sign out</button></form>
  % end
</header>
% if get('message'):
<p class="message">{{message}}</p>
% end
% if get('error'):
<p class="error">{{error}}</p>
% end
{{!base}}
</body>
</html>
