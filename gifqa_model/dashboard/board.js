// the runs table: filter, sort by a column, pick two to compare
function filterRuns(q){q=q.toLowerCase();for(const tr of document.querySelectorAll('#runs tbody tr'))
 tr.style.display=tr.dataset.search.toLowerCase().includes(q)?'':'none'}
document.querySelectorAll('#runs th').forEach(th=>th.onclick=()=>{const i=+th.dataset.col,
 body=document.querySelector('#runs tbody'),rows=[...body.rows],dir=th.dataset.dir=th.dataset.dir==='a'?'d':'a';
 const key=r=>{const c=r.cells[i];return c.dataset.v!==undefined?+c.dataset.v:c.textContent};
 rows.sort((x,y)=>(key(x)>key(y)?1:key(x)<key(y)?-1:0)*(dir==='a'?1:-1));rows.forEach(r=>body.appendChild(r))});
const boxes=[...document.querySelectorAll('input[name=pick]')],form=document.getElementById('pick');
boxes.forEach(b=>b.onchange=()=>{const on=boxes.filter(x=>x.checked);
 document.getElementById('compare').disabled=on.length!==2;
 if(on.length===2){form.a.value=on[0].value;form.b.value=on[1].value}});
