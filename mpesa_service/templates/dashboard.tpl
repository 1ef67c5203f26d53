% rebase('layout', title='Status')
% def money(value):
%   return f"{value:,.2f}"
% end
% if found is not None:
<h2>Search: {{q}}</h2>
<table><tr><th>reference</th><th>status</th><th>amount</th><th>receipt</th><th>user</th></tr>
% for row in found:
<tr><td><a href="/console/payouts/{{url(row.reference_id)}}">{{row.reference_id}}</a></td><td>{{row.status}}</td><td class="num">{{money(row.amount or 0)}}</td><td>{{row.transaction_id or ''}}</td><td>{{row.user_id or ''}}</td></tr>
% end
</table>
% if not found:
<p>Nothing matches.</p>
% end
% end

<div class="panels">
% for label, rows in (('Payouts today', payouts_today), ('Payouts this week', payouts_week), ('Collections today', collections_today), ('Collections this week', collections_week)):
<section>
<h2>{{label}}</h2>
<table><tr><th>status</th><th>count</th><th>KES</th></tr>
% for row in rows:
<tr><td>{{row['status']}}</td><td class="num">{{row['count']}}</td><td class="num">{{money(row['kes'])}}</td></tr>
% end
% if not rows:
<tr><td colspan="3">none</td></tr>
% end
</table>
</section>
% end
</div>

<h2 id="review">Review queue ({{len(review)}})</h2>
<table><tr><th>reference</th><th>status</th><th>age (h)</th><th>amount</th><th>phone</th><th>last status answer</th><th>resolve</th></tr>
% for item in review:
<tr>
  <td><a href="/console/payouts/{{url(item['reference_id'])}}">{{item['reference_id']}}</a></td>
  <td>{{item['status']}}</td><td class="num">{{item['age_hours']}}</td>
  <td class="num">{{money(item['amount'] or 0)}}</td><td>{{item['phone']}}</td><td>{{item['last_answer']}}</td>
  <td>
    <form method="post" action="/console/payouts/{{url(item['reference_id'])}}/resolve">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <select name="outcome"><option value="paid">paid</option><option value="not_paid">not paid</option></select>
      <input name="receipt" placeholder="receipt (if paid)" size="12">
      <input name="note" placeholder="why" required size="20">
      <button type="submit">Resolve</button>
    </form>
  </td>
</tr>
% end
% if not review:
<tr><td colspan="7">Nothing waits for a person.</td></tr>
% end
</table>

<div class="panels">
<section>
<h2>Failures this week by result code</h2>
<table><tr><th>code</th><th>meaning</th><th>count</th></tr>
% for row in failures:
<tr><td>{{row['code']}}</td><td>{{row['meaning']}}</td><td class="num">{{row['count']}}</td></tr>
% end
</table>
</section>
<section>
<h2>B2C utility balance</h2>
% if balance:
<p>KES {{money(balance.available)}} at {{balance.checked_at}} UTC</p>
% else:
<p>No balance check has run (set BALANCE_CHECK_MINUTES).</p>
% end
<h2>Last reconciliation</h2>
% if recon:
<p>Run {{recon['run']}} · <a href="/console/reports/{{url(recon['run'])}}/report.html">report</a></p>
<table><tr>
% for name in recon['rows'][0].keys() if recon['rows'] else []:
<th>{{name}}</th>
% end
</tr>
% for row in recon['rows']:
<tr>
% for value in row.values():
<td>{{value}}</td>
% end
</tr>
% end
</table>
% else:
<p>No reconciliation report yet.</p>
% end
</section>
</div>

<h2>Open flags ({{len(flags)}})</h2>
<table><tr><th>when (UTC)</th><th>flag</th><th>on</th><th>detail</th></tr>
% for flag in flags:
<tr><td>{{flag.created_at}}</td><td>{{flag.flag}}</td>
% if flag.reference_id:
<td>payout <a href="/console/payouts/{{url(flag.reference_id)}}">{{flag.reference_id}}</a></td>
% else:
<td>{{flag.subject_type}} {{flag.subject_id}}</td>
% end
<td>{{flag.detail}}</td></tr>
% end
</table>
