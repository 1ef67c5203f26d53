% rebase('layout', title='Outbound events')
<h2>Outbound events (the last {{len(events)}}, failing first)</h2>
<table id="events"><tr><th></th><th>type</th><th>subject</th><th>created</th><th>state</th><th>attempts</th><th>last attempt</th><th>latency</th><th></th></tr>
% for e in events:
<tr{{!' class="failing"' if e.failing else ''}}><td>{{'failing' if e.failing else ''}}</td><td>{{e.type}}</td>
% if e.reference_id is not None:
<td>payout <a href="/console/payouts/{{url(e.reference_id)}}">{{e.reference_id}}</a></td>
% else:
<td>{{e.subject}}</td>
% end
<td>{{!when(e.created_at)}}</td><td>{{e.state}}</td><td class="num">{{e.attempts}}</td>
% if e.last_attempt is not None:
<td>{{!when(e.last_attempt.attempted_at)}} {{e.last_attempt.status_code if e.last_attempt.status_code is not None else e.last_attempt.error}}</td><td class="num">{{e.last_attempt.latency_ms}} ms</td>
% else:
<td>not tried yet</td><td></td>
% end
<td><form method="post" action="/console/events/{{url(e.id)}}/redeliver" class="inline"><input type="hidden" name="csrf" value="{{csrf}}"><button>Redeliver</button></form></td></tr>
% end
</table>
