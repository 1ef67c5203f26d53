% rebase('layout', title='C2B payments')
<h2>C2B payments (the last {{len(payments)}}, newest first)</h2>
<p>Paybill and till payments customers made themselves. <b>pull</b>: found by Pull Transactions because its confirmation never came.</p>
<table id="c2b"><tr><th>receipt</th><th>kind</th><th>amount</th><th>bill reference</th><th>MSISDN (as sent)</th><th>name</th><th>paid</th><th>source</th><th>confirmed</th><th>flags</th></tr>
% for p, flags in payments:
<tr{{!' class="failing"' if flags else ''}}><td><a href="/console/payments/{{url(p.id)}}">{{p.trans_id or '(none: malformed)'}}</a></td><td>{{p.kind or p.transaction_type or ''}}</td><td class="num">{{money(p.amount)}}</td><td>{{p.bill_ref_number or ''}}</td><td>{{p.msisdn or ''}}</td>
<td>{{' '.join(filter(None, (p.first_name, p.middle_name, p.last_name)))}}</td><td>{{!when(p.trans_time) if p.trans_time else ''}}</td><td>{{p.source}}</td><td>{{!when(p.confirmed_at) if p.confirmed_at else 'no'}}</td><td>{{', '.join(flags)}}</td></tr>
% end
</table>
