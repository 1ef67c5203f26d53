% rebase('layout', title='Status')
% if found is not None:
<h2 id="payouts-found">Payouts matching {{search_text}} ({{len(found.payouts)}})</h2>
<table><tr><th>reference</th><th>status</th><th>amount</th><th>receipt</th><th>phone</th><th>user</th><th>initiated</th></tr>
% for row in found.payouts:
<tr><td><a href="/console/payouts/{{url(row.reference_id)}}">{{row.reference_id}}</a></td><td>{{row.status}}</td><td class="num">{{money(row.amount or 0)}}</td><td>{{row.transaction_id or ''}}</td><td>{{mask(row.phone_number)}}</td><td>{{row.user_id or ''}}</td><td>{{!when(row.initiated_at)}}</td></tr>
% end
% if not found.payouts:
<tr><td colspan="7">No payout matches.</td></tr>
% end
</table>
<h2 id="collections-found">Collections matching {{search_text}} ({{len(found.collections)}})</h2>
<table><tr><th>id</th><th>status</th><th>amount</th><th>receipt</th><th>phone</th><th>user</th><th>CheckoutRequestID</th><th>created</th></tr>
% for row in found.collections:
<tr><td><a href="/console/payments/{{url(row.id)}}">{{row.id}}</a></td><td>{{row.status}}</td><td class="num">{{money(row.amount or 0)}}</td><td>{{row.mpesa_receipt or ''}}</td><td>{{mask(row.phone_number)}}</td><td>{{row.user_id or ''}}</td><td>{{row.checkout_request_id or ''}}</td><td>{{!when(row.created_at)}}</td></tr>
% end
% if not found.collections:
<tr><td colspan="8">No collection matches.</td></tr>
% end
</table>
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

<h2 id="awaiting-approval"><a href="/console/approvals">Approvals queue</a> ({{awaiting_approval}})</h2>
<p>{{awaiting_approval}} payout(s) above APPROVAL_ABOVE wait for an operator other than the one who asked for them.</p>

<h2 id="review">Review queue ({{len(review)}})</h2>
<table><tr><th>reference</th><th>status</th><th>age</th><th>amount</th><th>phone</th><th>last status answer</th><th>resolve</th></tr>
% for item in review:
<tr>
  <td><a href="/console/payouts/{{url(item['reference_id'])}}">{{item['reference_id']}}</a></td>
  <td>{{item['status']}}</td><td class="num">{{item['age']}}</td>
  <td class="num">{{money(item['amount'] or 0)}}</td><td>{{item['phone']}}</td><td>{{item['last_answer']}}</td>
  <td>
    <form method="post" action="/console/payouts/{{url(item['reference_id'])}}/resolve">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <select name="outcome" required><option value="" disabled selected>choose…</option><option value="paid">paid</option><option value="not_paid">not paid</option></select>
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
<p>KES {{money(balance.available)}} at {{!when(balance.checked_at)}}</p>
% else:
<p>No balance check has run (set BALANCE_CHECK_MINUTES).</p>
% end
<h2>Last reconciliation</h2>
% if recon:
% if recon.period:
<p>Reconciliation of {{recon.period}} (ran {{!when(recon.ran_at)}}) · <a href="/console/reports/{{url(recon.folder)}}/report.html">report</a></p>
% else:
<p>Reconciliation report {{recon.folder}}, its period not recorded (written {{!when(recon.ran_at)}}) · <a href="/console/reports/{{url(recon.folder)}}/report.html">report</a></p>
% end
<table><tr>
% for name in recon.rows[0].keys() if recon.rows else []:
<th>{{name}}</th>
% end
</tr>
% for row in recon.rows:
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
<table><tr><th>when</th><th>flag</th><th>on</th><th>detail</th></tr>
% for flag in flags:
<tr><td>{{!when(flag.created_at)}}</td><td>{{flag.flag}}</td>
% if flag.reference_id:
<td>payout <a href="/console/payouts/{{url(flag.reference_id)}}">{{flag.reference_id}}</a></td>
% else:
<td>{{flag.subject_type}} {{flag.subject_id}}</td>
% end
<td>{{flag.detail}}</td></tr>
% end
</table>
